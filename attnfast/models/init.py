"""Weight initialisation of the original trainer (``weights_init``), applied with ``net.apply``."""
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd


def weights_init(m: nn.Module) -> None:
    """Conv: orthogonal (gain 1); BatchNorm: weight ~ N(1, 0.02), bias 0; Linear: orthogonal, bias 0.

    The original matched class names ("Conv", "BatchNorm", "Linear"); isinstance is used here so
    that wrappers such as Inception's ``BasicConv2d`` (no ``weight``) are skipped, not crashed on.
    As in the original, conv biases are left as they are.
    """
    if isinstance(m, _ConvNd):
        nn.init.orthogonal_(m.weight, 1.0)
    elif isinstance(m, _BatchNorm):
        if m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight, 1.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
