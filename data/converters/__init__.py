"""Converters from other annotation formats to the YOLO txt layout."""
