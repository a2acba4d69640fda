"""Metrics: attribute accuracy and attention grounding on shapes, R-precision (DAMSM), IS and FID
(torchmetrics, local Inception weights)."""
from .inception_metrics import InceptionMetrics, load_inception_features, to_uint8_rgb
from .r_precision import r_precision, r_precision_from_features

__all__ = [
           "InceptionMetrics",
           "load_inception_features",
           "r_precision",
           "r_precision_from_features",
           "to_uint8_rgb",
]
