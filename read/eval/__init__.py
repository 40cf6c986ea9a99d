"""Evaluation: segmentation metrics (gIoU/cIoU, FP-RefCOCO See/Segment) and evaluation helpers."""
