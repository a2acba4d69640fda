"""The Triton path of the generator blocks (DESIGN.md §3.3): the fused BatchNorm + GLU / + residual
of :mod:`attnfast.kernels.bn_glu` as torch.library custom ops (so torch.compile traces them without
graph breaks and CUDA graphs capture them), and upBlock / ResBlock built on them.

Ops (functional, no mutation: running statistics are updated by the caller from the returned
batch statistics, because torch.library cannot attach autograd to a mutating op):
- ``attnfast::bn_act(y, weight, bias, residual?, running_mean?, running_var?, training, eps, glu,
  subpixel) -> (out, mean, invstd, var_unbiased)`` with autograd to y, weight, bias, residual;
- ``attnfast::bn_act_backward(grad_out, y, weight, bias, mean, invstd, training, glu, subpixel)
  -> (dy, dweight, dbias)``, an op of its own so the traced backward stays opaque too;
- ``attnfast::affine_act(y, scale, shift, residual?, glu, subpixel) -> out``: the inference
  epilogue (no autograd).
Importing this module raises ImportError when Triton is missing (the dispatcher reports it).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from attnfast import reference
from attnfast.kernels import bn_glu as _kernels
from attnfast.reference.blocks import BatchNormParams


@torch.library.custom_op("attnfast::bn_act", mutates_args=())
def _bn_act_op(y: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None,
               running_mean: Tensor | None, running_var: Tensor | None, training: bool,
               eps: float, glu: bool, subpixel: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _kernels.check_inputs(y, weight, bias, residual, glu, subpixel, training)
    return _kernels.bn_act_forward(y, weight, bias, residual, running_mean, running_var, training,
                                   eps, glu, subpixel)


@_bn_act_op.register_fake
def _(y, weight, bias, residual, running_mean, running_var, training, eps, glu, subpixel):
    stats = [y.new_empty(weight.shape, dtype=torch.float32) for _ in range(3)]
    return (_kernels.output_like(y, glu, subpixel, residual), *stats)


@torch.library.custom_op("attnfast::bn_act_backward", mutates_args=())
def _bn_act_backward_op(grad_out: Tensor, y: Tensor, weight: Tensor, bias: Tensor, mean: Tensor,
                        invstd: Tensor, training: bool, glu: bool,
                        subpixel: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _kernels.bn_act_backward(grad_out, y, weight, bias, mean, invstd, training, glu, subpixel)


@_bn_act_backward_op.register_fake
def _(grad_out, y, weight, bias, mean, invstd, training, glu, subpixel):
    fmt = torch.channels_last if _kernels._channels_last(y) else torch.contiguous_format
    return torch.empty_like(y, memory_format=fmt), torch.empty_like(weight), torch.empty_like(bias)


def _setup_context(ctx, inputs, output):
    y, weight, bias, residual, _, _, training, _, glu, subpixel = inputs
    _, mean, invstd, var = output
    ctx.mark_non_differentiable(mean, invstd, var)
    ctx.save_for_backward(y, weight, bias, mean, invstd)
    ctx.flags = (training, glu, subpixel, residual is not None)


def _backward(ctx, grad_out, *_stat_grads):
    y, weight, bias, mean, invstd = ctx.saved_tensors
    training, glu, subpixel, has_residual = ctx.flags
    dy, dweight, dbias = _bn_act_backward_op(grad_out, y, weight, bias, mean, invstd, training, glu,
                                             subpixel)
    return (dy, dweight, dbias, grad_out if has_residual else None, None, None, None, None, None, None)


_bn_act_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("attnfast::affine_act", mutates_args=())
def _affine_act_op(y: Tensor, scale: Tensor, shift: Tensor, residual: Tensor | None, glu: bool,
                   subpixel: bool) -> Tensor:
    return _kernels.affine_act(y, scale, shift, residual, glu, subpixel)


@_affine_act_op.register_fake
def _(y, scale, shift, residual, glu, subpixel):
    return _kernels.output_like(y, glu, subpixel, residual)


# --------------------------------------------------------------------------------------------
# Block functions (the ``triton`` backend of attnfast.ops.blocks)
# --------------------------------------------------------------------------------------------
def bn_act_triton(y: Tensor, bn: BatchNormParams, *, glu: bool, subpixel: bool = False,
                  residual: Tensor | None = None) -> Tensor:
    """BatchNorm (batch statistics when ``bn.training``, running ones otherwise) then GLU or
    + residual; updates bn's running statistics in place as ``nn.BatchNorm2d`` does.

    y: (B, K, H, W), or (B, 4K, H+1, W+1) sub-pixel phases with ``subpixel``. Returns
    (B, K/2 or K, H', W') in y's dtype (promoted with residual's), y's memory format.
    """
    channels = y.shape[1] // (4 if subpixel else 1)
    weight = bn.weight if bn.weight is not None else y.new_ones(channels, dtype=torch.float32)
    bias = bn.bias if bn.bias is not None else y.new_zeros(channels, dtype=torch.float32)
    out, mean, _, var = _bn_act_op(y, weight, bias, residual, bn.running_mean, bn.running_var,
                                   bn.training, float(bn.eps), glu, subpixel)
    if bn.training and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), bn.momentum)
            bn.running_var.lerp_(var.to(bn.running_var.dtype), bn.momentum)
    return out


def conv_act_triton(x: Tensor, weight: Tensor, bias: Tensor, *, glu: bool, subpixel: bool = False,
                    residual: Tensor | None = None) -> Tensor:
    """A BN-folded block conv: conv (cuDNN, padding 1, no bias), then one pass adding ``bias``
    per BatchNorm channel, GLU, the sub-pixel shuffle and/or the residual (the conv epilogue).

    x: (B, Cin, H, W); weight: (K, Cin, 3, 3) or sub-pixel (4K, Cin, 2, 2); bias: (K,).
    """
    y = F.conv2d(x, weight.to(x.dtype), padding=1)
    return _affine_act_op(y, torch.ones_like(bias, dtype=torch.float32), bias, residual, glu, subpixel)


def up_block_triton(x: Tensor, conv_weight: Tensor, bn: BatchNormParams) -> Tensor:
    """upBlock: sub-pixel conv (cuDNN) then the fused BatchNorm + GLU reading the phases in place.

    (B, Cin, H, W) -> (B, Cout, 2H, 2W) with conv_weight (2 Cout, Cin, 3, 3).
    """
    with torch.autocast(x.device.type, enabled=False):   # fold exactly, autocast casts at the conv
        weight = reference.subpixel_weight(conv_weight)
    phases = F.conv2d(x, weight, padding=1)                                    # (B, 8Cout, H+1, W+1)
    return bn_act_triton(phases, bn, glu=True, subpixel=True)


def res_block_triton(x: Tensor, conv1_weight: Tensor, bn1: BatchNormParams, conv2_weight: Tensor,
                     bn2: BatchNormParams) -> Tensor:
    """ResBlock: conv -> fused BN + GLU -> conv -> fused BN + residual; (B, C, H, W) -> same."""
    hidden = bn_act_triton(F.conv2d(x, conv1_weight, padding=1), bn1, glu=True)   # (B, C, H, W)
    return bn_act_triton(F.conv2d(hidden, conv2_weight, padding=1), bn2, glu=False, residual=x)
