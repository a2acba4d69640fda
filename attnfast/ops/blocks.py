"""Residual and upsampling blocks (DESIGN.md §3.3): drop-ins with the original structure and
parameter names, dispatching to a backend per call, and their folded inference forms.

Backends of ``upBlock`` (``backend=`` or ``$ATTNFAST_BACKEND``):

- "reference": the literal original, nearest 2x upsample -> conv3x3 -> BatchNorm -> GLU.
- "cpu" / "cuda": the sub-pixel form in plain PyTorch (mkldnn / cuDNN conv, native BatchNorm):
  one 2x2 conv with 4x the output channels on the low-resolution input, the pixel shuffle, then
  BatchNorm -> GLU. 2.25x fewer multiply-adds than the original and no 4x upsampled input.
  On CPU only from B*H*W >= CPU_SUBPIXEL_MIN_POSITIONS (measured crossover), else the original.
- "triton": the sub-pixel conv, then one fused Triton BatchNorm + GLU that reads the conv's
  phases in place (no separate shuffle pass); CUDA tensors, or CPU ones under TRITON_INTERPRET=1.
"auto": CUDA -> triton (cuda without Triton); CPU -> cpu. (For these blocks "cpu"/"cuda" name
the plain-PyTorch sub-pixel path: there is no C++ kernel to beat mkldnn / cuDNN convolutions.)

``ResBlock`` has "reference" (plain PyTorch), "cpu" and "cuda" (the same with the GLU's
hand-written backward) and "triton" (conv -> fused BN + GLU -> conv -> fused BN + residual).

The sub-pixel form is exact: it derives its 2x2 kernels from the module's own 3x3 weight on every
call (:func:`attnfast.reference.subpixel_weight`), so values and gradients -- to the input and to
the 3x3 parameter -- equal the original's up to float rounding, and checkpoints are unchanged.
"""
import torch
import torch.nn.functional as F
from torch import nn

from attnfast import reference
from attnfast.reference.blocks import BatchNormParams
from . import _validate as check
from . import fast_autograd
from ._dispatch import OpBackends, triton_usable


def _on(device_type: str):
    def available(device: torch.device) -> tuple[bool, str]:
        if device.type != device_type:
            return False, f"the {device_type} backend needs {device_type.upper()} tensors"
        return True, ""
    return available


def _triton(name: str):
    def load():
        from attnfast.kernels import blocks as kernels
        return getattr(kernels, name)
    return load


# --------------------------------------------------------------------------------------------
# Plain-PyTorch fast paths
# --------------------------------------------------------------------------------------------
def subpixel_interleave(phases: torch.Tensor) -> torch.Tensor:
    """The pixel shuffle of the sub-pixel conv: (B, 4C, H+1, W+1) -> (B, C, 2H, 2W).

    ``phases`` is ``conv2d(x, subpixel_weight(w), padding=1)`` (channel 4c + 2a + b holds phase
    (a, b)); output pixel (2i + a, 2j + b) = phases[:, 4c + 2a + b, i + a, j + b]. One strided copy
    per phase, in phases' memory format; its backward is the copies back plus zeroing the unread
    row and column per phase (:mod:`attnfast.ops.fast_autograd`, no zero-filled scatter).
    """
    return fast_autograd.subpixel_interleave(phases)


def subpixel_weight(conv_weight: torch.Tensor) -> torch.Tensor:
    """:func:`attnfast.reference.subpixel_weight` outside autocast: the 2x2 kernels are sums of
    the 3x3 taps in the weight's own dtype, rounded once (autocast would round the taps to bf16
    first and the sums again), then cast by autocast at the conv like the original weight."""
    with torch.autocast(conv_weight.device.type, enabled=False):
        return reference.subpixel_weight(conv_weight)


def up_conv_subpixel(x: torch.Tensor, conv_weight: torch.Tensor) -> torch.Tensor:
    """``conv3x3(nearest2x(x))`` by the sub-pixel form: (B, Cin, H, W) -> (B, Cout, 2H, 2W)."""
    phases = F.conv2d(x, subpixel_weight(conv_weight), padding=1)            # (B, 4Cout, H+1, W+1)
    return subpixel_interleave(phases)


def bn_glu(x: torch.Tensor, bn: BatchNormParams) -> torch.Tensor:
    """BatchNorm then GLU, (B, 2C, H, W) -> (B, C, H, W): :func:`attnfast.reference.bn_glu` with
    :func:`attnfast.ops.fast_autograd.glu` (same values and gradients bit for bit in float32 and
    float64; in bf16 / fp16 ATen's fused glu, equal up to rounding)."""
    return fast_autograd.glu(reference.batch_norm(x, bn))


def up_block_subpixel(x: torch.Tensor, conv_weight: torch.Tensor, bn: BatchNormParams) -> torch.Tensor:
    """upBlock with the sub-pixel conv, plain PyTorch: (B, Cin, H, W) -> (B, Cout, 2H, 2W)."""
    return bn_glu(up_conv_subpixel(x, conv_weight), bn)


def up_block_upsample(x: torch.Tensor, conv_weight: torch.Tensor, bn: BatchNormParams) -> torch.Tensor:
    """The original upBlock (nearest 2x, 3x3 conv, BN, GLU) with :func:`bn_glu`'s GLU backward:
    (B, Cin, H, W) -> (B, Cout, 2H, 2W), equal to :func:`attnfast.reference.up_block` bit for bit
    in float32 (up to rounding in bf16 / fp16: :func:`bn_glu`)."""
    x = F.interpolate(x, scale_factor=2, mode="nearest")                  # (B, Cin, 2H, 2W)
    return bn_glu(F.conv2d(x, conv_weight, padding=1), bn)


def res_block_torch(x: torch.Tensor, conv1_weight: torch.Tensor, bn1: BatchNormParams,
                    conv2_weight: torch.Tensor, bn2: BatchNormParams) -> torch.Tensor:
    """:func:`attnfast.reference.res_block` with :func:`bn_glu`'s GLU backward (bit for bit in float32):
    (B, C, H, W) -> (B, C, H, W); conv1_weight (2C, C, 3, 3), conv2_weight (C, C, 3, 3)."""
    out = bn_glu(F.conv2d(x, conv1_weight, padding=1), bn1)
    out = reference.batch_norm(F.conv2d(out, conv2_weight, padding=1), bn2)
    return out + x


# Measured on the 2-core CPU, fp32, one thread: the sub-pixel conv alone wins from B*H*W = 320 on
# (x1.3 at B20 4x4, x1.8-2.3 at B4 16x16-32x32) and loses below (x0.5 at B4 4x4, x1.0 at B4 8x8:
# folding a 512x512x3x3 weight costs as much as the conv there); whole upBlock fwd+bwd with it
# (bench/results/blocks_cpu.json, B4): x1.86 at 16x16, x1.79 32x32, x1.66 64x64, x1.27 128x128.
CPU_SUBPIXEL_MIN_POSITIONS = 320


def up_block_cpu(x: torch.Tensor, conv_weight: torch.Tensor, bn: BatchNormParams) -> torch.Tensor:
    """The "cpu" upBlock: sub-pixel form, except for inputs with fewer than
    ``CPU_SUBPIXEL_MIN_POSITIONS`` batch x low-res positions, where the original is faster."""
    if x.shape[0] * x.shape[2] * x.shape[3] < CPU_SUBPIXEL_MIN_POSITIONS:
        return up_block_upsample(x, conv_weight, bn)
    return up_block_subpixel(x, conv_weight, bn)


def conv_act_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, glu: bool,
                   subpixel: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """A BN-folded block conv in PyTorch: conv (padding 1, the folded bias inside the conv), GLU,
    pixel shuffle (``subpixel``), + residual.

    x: (B, Cin, H, W); weight: (K, Cin, 3, 3), or (4K, Cin, 2, 2) sub-pixel kernels; bias: (K,)
    per BatchNorm channel. GLU runs on the phases before the shuffle (their channel halves
    coincide), so the shuffle moves half the data.
    """
    bias = bias.to(x.dtype)
    y = F.conv2d(x, weight.to(x.dtype), bias.repeat_interleave(4) if subpixel else bias, padding=1)
    if glu:
        y = fast_autograd.glu(y)
    if subpixel:
        y = subpixel_interleave(y)
    return y if residual is None else y + residual


def _table(name: str, plain, cpu=None, cuda=None) -> OpBackends:
    """reference = ``plain``; cpu / cuda (plain PyTorch is these blocks' fast path without
    Triton) default to it; triton from attnfast.kernels.blocks."""
    table = OpBackends(name)
    table.register("reference", lambda: plain)
    table.register("cpu", lambda: cpu or plain, _on("cpu"))
    table.register("cuda", lambda: cuda or plain, _on("cuda"))
    return table


UP_BLOCK = _table("upBlock", reference.up_block, cpu=up_block_cpu, cuda=up_block_subpixel)
UP_BLOCK.register("triton", _triton("up_block_triton"), triton_usable)
RES_BLOCK = _table("ResBlock", reference.res_block, cpu=res_block_torch, cuda=res_block_torch)
RES_BLOCK.register("triton", _triton("res_block_triton"), triton_usable)
# The folded blocks' conv + epilogue (BatchNorm already in the conv weights and bias).
CONV_ACT = _table("conv_act", conv_act_torch)
CONV_ACT.register("triton", _triton("conv_act_triton"), triton_usable)


# --------------------------------------------------------------------------------------------
# Drop-ins
# --------------------------------------------------------------------------------------------
def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    """The original ``conv3x3``: 3x3, stride 1, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, bias: bool = False) -> nn.Conv2d:
    """The original ``conv1x1``."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=bias)


def _features(name: str, x, channels: int) -> torch.Tensor:
    check.tensor(name, x, ndim=4, expected=f"(B, {channels}, H, W)")
    check.dim_equals(name, x, 1, channels, f"(B, {channels}, H, W)", "the block's input channels")
    return x


class GLU(nn.Module):
    """Drop-in for AttnGAN's ``GLU``: x[:, :C] * sigmoid(x[:, C:]) for x (B, 2C, ...)."""

    def forward(self, x):
        if not torch.is_tensor(x) or x.dim() < 2:
            raise ValueError("GLU expects a tensor (B, 2C, ...)")
        return fast_autograd.glu(x)


class upBlock(nn.Sequential):  # noqa: N801 - the original's name
    """Drop-in for the original ``upBlock(in_planes, out_planes)``: nearest 2x -> conv3x3 ->
    BatchNorm -> GLU, (B, in_planes, H, W) -> (B, out_planes, 2H, 2W).

    Same ``nn.Sequential`` structure, hence the same state_dict keys (``1.weight``, ``2.*``).
    The fast backends (auto's choice on CPU and CUDA) run the sub-pixel form: one 2x2 conv with
    4x the output channels, kernels derived from ``1.weight`` on every call, then the pixel
    shuffle; equal to the original in values and in the gradients to x and to the 3x3 weight up
    to float rounding. BatchNorm updates running_mean / running_var (unbiased) / num_batches_tracked
    exactly as ``nn.BatchNorm2d``. ``backend="reference"`` runs the literal original.
    """

    def __init__(self, in_planes: int, out_planes: int, backend: str | None = None):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"),
                         conv3x3(in_planes, out_planes * 2),
                         nn.BatchNorm2d(out_planes * 2),
                         GLU())
        self.backend = backend

    def forward(self, x):
        conv, bn = self[1], self[2]
        x = _features("x", x, conv.in_channels)
        _, impl = UP_BLOCK.pick(self.backend, x.device)
        return impl(x, conv.weight, BatchNormParams.of(bn))


class ResBlock(nn.Module):
    """Drop-in for the original ``ResBlock(channel_num)``: conv3x3 -> BN -> GLU -> conv3x3 -> BN,
    plus the input; (B, C, H, W) -> (B, C, H, W). Keys ``block.0.weight``, ``block.1.*``,
    ``block.3.weight``, ``block.4.*`` as the original. The triton backend fuses BN + GLU and
    BN + residual into one pass each (plus one statistics pass per BN in training)."""

    def __init__(self, channel_num: int, backend: str | None = None):
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channel_num, channel_num * 2),
            nn.BatchNorm2d(channel_num * 2),
            GLU(),
            conv3x3(channel_num, channel_num),
            nn.BatchNorm2d(channel_num))
        self.backend = backend

    def forward(self, x):
        x = _features("x", x, self.block[0].in_channels)
        _, impl = RES_BLOCK.pick(self.backend, x.device)
        return impl(x, self.block[0].weight, BatchNormParams.of(self.block[1]),
                    self.block[3].weight, BatchNormParams.of(self.block[4]))


# --------------------------------------------------------------------------------------------
# Folded inference forms (built by attnfast.models.fuse_for_inference)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def fold_batch_norm(weight: torch.Tensor, bias: torch.Tensor | None,
                    bn: nn.modules.batchnorm._BatchNorm,
                    dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm after a conv/linear folded into it: (weight', bias') with
    weight' = weight * s, bias' = (bias - running_mean) * s + beta, s = gamma / sqrt(var + eps).

    weight: (Cout, ...); computed in float64, returned in ``dtype`` (default weight's).
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("only a BatchNorm with running statistics can be folded")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bias is not None:
        shift = shift + bias.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    folded = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    dtype = dtype or weight.dtype
    return folded.to(dtype), shift.to(dtype)


class FoldedUpBlock(nn.Module):
    """Inference upBlock: sub-pixel 2x2 conv with the BatchNorm folded in, then one epilogue pass
    (Triton: bias + GLU + shuffle; PyTorch: bias in the conv, GLU, shuffle).
    (B, Cin, H, W) -> (B, Cout, 2H, 2W).

    Buffers: ``weight`` (4 * 2Cout, Cin, 2, 2), ``bias`` (2Cout,).
    """

    def __init__(self, conv_weight: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm,
                 backend: str | None = None):
        super().__init__()
        weight, bias = fold_batch_norm(conv_weight, None, bn, torch.float64)   # rounded once, below
        self.register_buffer("weight", reference.subpixel_weight(weight).to(conv_weight.dtype))
        self.register_buffer("bias", bias.to(conv_weight.dtype))
        self.backend = backend

    def forward(self, x):
        x = _features("x", x, self.weight.shape[1])
        _, impl = CONV_ACT.pick(self.backend, x.device)
        return impl(x, self.weight, self.bias, glu=True, subpixel=True)


class FoldedResBlock(nn.Module):
    """Inference ResBlock: conv (BN folded) -> GLU -> conv (BN folded) -> + residual, each
    epilogue one pass (Triton adds the bias there; PyTorch in the conv). Buffers ``weight1`` (2C, C, 3, 3), ``bias1`` (2C,), ``weight2``
    (C, C, 3, 3), ``bias2`` (C,)."""

    def __init__(self, block: nn.Sequential, backend: str | None = None):
        super().__init__()
        for i, (conv, bn) in enumerate(((block[0], block[1]), (block[3], block[4])), start=1):
            weight, bias = fold_batch_norm(conv.weight, conv.bias, bn)
            self.register_buffer(f"weight{i}", weight)
            self.register_buffer(f"bias{i}", bias)
        self.backend = backend

    def forward(self, x):
        x = _features("x", x, self.weight1.shape[1])
        _, impl = CONV_ACT.pick(self.backend, x.device)
        hidden = impl(x, self.weight1, self.bias1, glu=True)                # (B, C, H, W)
        return impl(hidden, self.weight2, self.bias2, glu=False, residual=x)
