"""Metrics: attribute accuracy and attention grounding on shapes, R-precision (DAMSM)."""
from .r_precision import r_precision, r_precision_from_features

__all__ = ["r_precision", "r_precision_from_features"]
