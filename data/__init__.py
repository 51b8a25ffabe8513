"""Dataset YAMLs and converters (VOC, COCO -> YOLO txt)."""
