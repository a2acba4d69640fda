"""Generator blocks (DESIGN.md §3.3) as functions of their parameters, pure PyTorch.

upBlock  = nearest 2x -> conv3x3 (no bias, 2C out) -> BatchNorm -> GLU
ResBlock = conv3x3 -> BN -> GLU -> conv3x3 -> BN -> + x
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def glu(x: torch.Tensor) -> torch.Tensor:
    """AttnGAN's GLU over channels: x[:, :C] * sigmoid(x[:, C:]) for x (B, 2C, ...)."""
    channels = x.size(1)
    if channels % 2:
        raise ValueError(f"glu: channel count must be even, got {channels}")
    half = channels // 2
    return x[:, :half] * torch.sigmoid(x[:, half:])


@dataclass
class BatchNormParams:
    """The tensors and settings of one BatchNorm (running stats are updated in place when training)."""
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    training: bool
    momentum: float = 0.1
    eps: float = 1e-5

    @classmethod
    def of(cls, bn: torch.nn.modules.batchnorm._BatchNorm) -> "BatchNormParams":
        """Parameters of an ``nn.BatchNorm*d`` module, honouring its mode and momentum."""
        use_batch_stats = bn.training or bn.running_mean is None
        momentum = bn.momentum
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average, as nn.BatchNorm
                momentum = 1.0 / float(bn.num_batches_tracked)
        return cls(bn.weight, bn.bias, bn.running_mean, bn.running_var, use_batch_stats,
                   momentum if momentum is not None else 0.0, bn.eps)


def batch_norm(x: torch.Tensor, bn: BatchNormParams) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        bn.training, bn.momentum, bn.eps)


def bn_glu(x: torch.Tensor, bn: BatchNormParams) -> torch.Tensor:
    """BatchNorm then GLU: (B, 2C, H, W) -> (B, C, H, W)."""
    return glu(batch_norm(x, bn))


def up_block(x: torch.Tensor, conv_weight: torch.Tensor, bn: BatchNormParams) -> torch.Tensor:
    """(B, Cin, H, W) -> (B, Cout, 2H, 2W) with conv_weight (2*Cout, Cin, 3, 3)."""
    x = F.interpolate(x, scale_factor=2, mode="nearest")                  # (B, Cin, 2H, 2W)
    x = F.conv2d(x, conv_weight, padding=1)                               # (B, 2Cout, 2H, 2W)
    return bn_glu(x, bn)


def res_block(x: torch.Tensor, conv1_weight: torch.Tensor, bn1: BatchNormParams,
              conv2_weight: torch.Tensor, bn2: BatchNormParams) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W); conv1_weight (2C, C, 3, 3), conv2_weight (C, C, 3, 3)."""
    out = bn_glu(F.conv2d(x, conv1_weight, padding=1), bn1)
    out = batch_norm(F.conv2d(out, conv2_weight, padding=1), bn2)
    return out + x


def subpixel_weight(conv_weight: torch.Tensor) -> torch.Tensor:
    """2x2 kernels equivalent to nearest-2x upsampling followed by a 3x3 conv (padding 1).

    For output phase (a, b) in {0,1}^2, output pixel (2i+a, 2j+b) reads low-resolution rows
    i-1+a .. i+a and columns j-1+b .. j+b; the 3 taps of each axis fold onto 2 low-res taps:
    phase 0: [w0, w1 + w2], phase 1: [w0 + w1, w2]. Returns (4*Cout, Cin, 2, 2) ordered for
    ``pixel_shuffle(., 2)`` (channel = cout*4 + a*2 + b).
    """
    cout, cin = conv_weight.shape[:2]
    fold = conv_weight.new_tensor([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]])  # (phase, tap, k)
    # w2[o, a, b, i, p, q] = sum_{k,l} fold[a, p, k] * fold[b, q, l] * w[o, i, k, l]
    folded = torch.einsum("apk,bql,oikl->oabipq", fold, fold, conv_weight)
    return folded.reshape(cout * 4, cin, 2, 2)


def up_conv_subpixel(x: torch.Tensor, conv_weight: torch.Tensor) -> torch.Tensor:
    """Exactly ``conv3x3(nearest2x(x))`` as one 2x2 conv with 4x channels + pixel shuffle.

    (B, Cin, H, W) -> (B, Cout, 2H, 2W); 2.25x fewer multiply-adds and no 4x intermediate.
    """
    padded = F.pad(x, (1, 1, 1, 1))                                        # (B, Cin, H+2, W+2)
    phases = F.conv2d(padded, subpixel_weight(conv_weight))                # (B, 4Cout, H+1, W+1)
    batch, _, hp, wp = phases.shape
    cout = conv_weight.shape[0]
    phases = phases.view(batch, cout, 2, 2, hp, wp)
    # phase (a, b) at output (2i+a, 2j+b) sits at phases[..., i+a, j+b]
    rows = [torch.stack([phases[:, :, a, b, a:a + hp - 1, b:b + wp - 1] for b in (0, 1)], dim=-1)
            for a in (0, 1)]
    out = torch.stack(rows, dim=-3)                                        # (B, Cout, H, 2, W, 2)
    return out.reshape(batch, cout, 2 * (hp - 1), 2 * (wp - 1))
