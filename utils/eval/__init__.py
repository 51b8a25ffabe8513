"""Evaluation: NMS, metrics (AP, confusion matrix), the validation loop, detection statistics and the
assignment views."""
