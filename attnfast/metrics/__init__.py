"""Metrics: attribute accuracy and attention grounding on shapes, R-precision (DAMSM)."""
