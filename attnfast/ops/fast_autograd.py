"""Hand-written backwards for two layout ops of the blocks (issue 27): the same values and gradients
as autograd's formulas, bit for bit, without their zero-filled intermediates.

- :func:`glu`: ``x[:, :C] * sigmoid(x[:, C:])``. Autograd's backward of the two channel slices
  allocates a zero-filled (B, 2C, ...) tensor per slice, copies each half in and adds the two; here
  the two halves' gradients (the same ``g * s`` and ``sigmoid_backward(g * a, s)`` autograd
  computes) are concatenated once. In bf16 / fp16 (autocast) it is ATen's fused glu instead,
  equal up to rounding (one rounding where the formulation above has two), and faster still.
- :func:`subpixel_interleave`: the pixel shuffle of the sub-pixel conv, (B, 4C, H+1, W+1) ->
  (B, C, 2H, 2W) by one strided copy per phase. Autograd's ``as_strided`` backward zero-fills a tensor of
  the input's storage size and scatters into it through a generic strided path; here the gradient
  is one copy into the same view plus zeroing the one row and one column per phase that the
  forward never reads. The two directions are each other's adjoints, so each one's backward is
  the other: double backward works.

Both take any floating dtype (bf16 under autocast) and any memory format of the input.
"""
import functools

import torch

__all__ = ["as_memory_format", "glu", "memory_format_of", "subpixel_deinterleave", "subpixel_interleave"]


# ---------------------------------------------------------------------------------------- GLU
_REDUCED = (torch.bfloat16, torch.float16)


class _GLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        gate = torch.sigmoid(x[:, half:])
        ctx.save_for_backward(x, gate)
        return x[:, :half] * gate

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, gate = ctx.saved_tensors
        half = x.shape[1] // 2
        if torch.is_grad_enabled():       # double backward: the gate as a function of x again
            gate = torch.sigmoid(x[:, half:])
        # autograd's own formulas: d(a * s)/da = g * s; d/ds = g * a, then sigmoid's backward
        grad_value = grad * gate
        grad_gate = torch.ops.aten.sigmoid_backward(grad * x[:, :half], gate)
        return torch.cat((grad_value, grad_gate), dim=1)


# ------------------------------------------------------------------------- GLU on NHWC, CPU
# ATen's glu on an NHWC tensor loops over each pixel's channel half (16-64 values, shorter than a
# bf16 vector: all scalar tail), 4-8x slower than on NCHW; attnfast._C's glu_rows walks whole blocks
# of pixels with vectorised rows (csrc/glu_cpu.cpp). Used for channels_last bf16 / fp16 on the CPU.
@functools.lru_cache(maxsize=1)
def _rows_kernel():
    """attnfast._C when it has the NHWC GLU kernel, else None (looked up once: the GLU's hot path)."""
    try:
        from attnfast import _C  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _C if hasattr(_C, "glu_rows_forward") else None


def _glu_nhwc_aten(x: torch.Tensor) -> torch.Tensor:
    """ATen's (differentiable) glu along the channels of an NHWC tensor: the pixel rows' last dim."""
    return torch.nn.functional.glu(x.permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)


def nhwc_glu_kernel_available() -> bool:
    """Whether the CPU's NHWC GLU kernel (attnfast._C.glu_rows_*) is built."""
    return _rows_kernel() is not None


def _pixels(t: torch.Tensor) -> torch.Tensor:
    """An NHWC (channels_last) (B, C, H, W) tensor as its (B*H*W, C) pixel rows (a view)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _glu_rows(x: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    out = _rows_kernel().glu_rows_forward(_pixels(x))                       # (B*H*W, C/2)
    return out.view(batch, height, width, channels // 2).permute(0, 3, 1, 2)   # NHWC (B, C/2, H, W)


class _GLURows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _glu_rows(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():   # double backward: ATen's differentiable glu on the same rows
            with torch.enable_grad():
                rows = x.detach().requires_grad_(True) if not x.requires_grad else x
                return torch.autograd.grad(_glu_nhwc_aten(rows), rows, grad, create_graph=True)[0]
        grad = grad.contiguous(memory_format=torch.channels_last)
        batch, channels, height, width = x.shape
        dx = _rows_kernel().glu_rows_backward(_pixels(grad), _pixels(x))     # (B*H*W, C)
        return dx.view(batch, height, width, channels).permute(0, 3, 1, 2)


def glu(x: torch.Tensor) -> torch.Tensor:
    """AttnGAN's GLU over channels: (B, 2C, ...) -> (B, C, ...), ``x[:, :C] * sigmoid(x[:, C:])``.

    float32 / float64: equal in values and gradients to :func:`attnfast.reference.glu` bit for bit
    (autograd's own formulas, see :class:`_GLU`). bfloat16 / float16 (autocast): ATen's fused
    ``glu`` and ``glu_backward`` kernels, which compute in float32 and round once, where the
    reference rounds the gate and the product separately: equal up to that rounding (half an ulp of
    the dtype per op), 1.7-2x faster forward + backward on the CPU (the demo's G, bf16).
    """
    if not torch.is_tensor(x) or x.dim() < 2:
        raise ValueError("glu expects a tensor (B, 2C, ...)")
    if x.shape[1] % 2:
        raise ValueError(f"glu: channel count must be even, got {x.shape[1]}")
    if x.dtype in _REDUCED:
        if _is_channels_last(x):     # the channel halves are the NHWC rows' halves: GLU along the last dim
            if x.device.type == "cpu" and _rows_kernel() is not None:
                return _GLURows.apply(x) if (x.requires_grad and torch.is_grad_enabled()) else _glu_rows(x)
            return _glu_nhwc_aten(x)
        return torch.nn.functional.glu(x, dim=1)
    if not (x.requires_grad and torch.is_grad_enabled()):
        half = x.shape[1] // 2
        return x[:, :half] * torch.sigmoid(x[:, half:])
    return _GLU.apply(x)


# ------------------------------------------------------------------------------- memory formats
def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.stride(1) == 1 and t.shape[1] > 1 and not t.is_contiguous()


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for an NHWC-strided 4-D tensor, else ``torch.contiguous_format``."""
    return torch.channels_last if _is_channels_last(t) else torch.contiguous_format


class _AsFormat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt):
        ctx.back = memory_format_of(x)
        return x.contiguous(memory_format=fmt)

    @staticmethod
    def backward(ctx, grad):
        return _as_format(grad, ctx.back), None


def _as_format(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    if x.dim() != 4 or x.is_contiguous(memory_format=fmt):
        return x
    if x.requires_grad and torch.is_grad_enabled():
        return _AsFormat.apply(x, fmt)
    return x.contiguous(memory_format=fmt)


def as_memory_format(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``x.contiguous(memory_format=fmt)`` whose gradient comes back in x's own memory format: the
    boundary between an NHWC (channels_last) part of a network and an NCHW one, so that neither side's
    backward mixes formats (a mixed pair of operands sends ATen's kernels down their slow strided
    paths: BatchNorm's backward 6x). x itself when it already is in ``fmt`` (or is not 4-D)."""
    return _as_format(x, fmt)


# ------------------------------------------------------------------------------- sub-pixel shuffle


def _phase_view(phases: torch.Tensor) -> torch.Tensor:
    """(B, 4C, H+1, W+1) seen as (B, C, H, 2, W, 2): element (n, c, i, a, j, b) is
    phases[n, 4c + 2a + b, i + a, j + b] (the a/b axes step a channel and a row/column at once)."""
    batch, channels4, hp, wp = phases.shape
    s_b, s_c, s_h, s_w = phases.stride()
    return phases.as_strided((batch, channels4 // 4, hp - 1, 2, wp - 1, 2),
                             (s_b, 4 * s_c, s_h, 2 * s_c + s_h, s_w, s_c + s_w), phases.storage_offset())


def _by_phase(phases: torch.Tensor) -> torch.Tensor:
    """(B, 4C, H+1, W+1) seen as (B, C, 2, 2, H+1, W+1): phase (a, b) of channel c at [:, c, a, b]."""
    batch, channels4, hp, wp = phases.shape
    s_b, s_c, s_h, s_w = phases.stride()
    return phases.as_strided((batch, channels4 // 4, 2, 2, hp, wp),
                             (s_b, 4 * s_c, 2 * s_c, s_c, s_h, s_w), phases.storage_offset())


# The interleave copies phase by phase (four strided copies whose inner loop runs along a row)
# rather than through the one 6-d view of _phase_view, whose innermost axis is a phase pair of two
# elements: measured 1.6-2.3x faster on the CPU (bf16, the demo's shapes). The way back is faster
# through the one view (0.90 vs 1.29 ms at (16, 32, 64, 64)).
def _interleave(phases: torch.Tensor) -> torch.Tensor:
    batch, channels4, hp, wp = phases.shape
    channels, height, width = channels4 // 4, hp - 1, wp - 1
    fmt = torch.channels_last if _is_channels_last(phases) else torch.contiguous_format
    out = torch.empty((batch, channels, 2 * height, 2 * width), dtype=phases.dtype,
                      device=phases.device, memory_format=fmt)
    grid, by_phase = out.view(batch, channels, height, 2, width, 2), _by_phase(phases)
    for a in (0, 1):
        for b in (0, 1):
            grid[:, :, :, a, :, b].copy_(by_phase[:, :, a, b, a:a + height, b:b + width])
    return out


def _deinterleave(grid: torch.Tensor) -> torch.Tensor:
    batch, channels, h2, w2 = grid.shape
    height, width = h2 // 2, w2 // 2
    fmt = torch.channels_last if _is_channels_last(grid) else torch.contiguous_format
    phases = torch.empty((batch, 4 * channels, height + 1, width + 1), dtype=grid.dtype,
                         device=grid.device, memory_format=fmt)
    _phase_view(phases).copy_(grid.reshape(batch, channels, height, 2, width, 2))
    by_phase = _by_phase(phases)
    # per phase (a, b) the forward reads rows a..a+H-1 and columns b..b+W-1: the rest is zero
    by_phase[:, :, 0, :, height, :].zero_()
    by_phase[:, :, 1, :, 0, :].zero_()
    by_phase[:, :, :, 0, :, width].zero_()
    by_phase[:, :, :, 1, :, 0].zero_()
    return phases


class _Interleave(torch.autograd.Function):
    @staticmethod
    def forward(ctx, phases):
        return _interleave(phases)

    @staticmethod
    def backward(ctx, grad):
        return _Deinterleave.apply(grad)


class _Deinterleave(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid):
        return _deinterleave(grid)

    @staticmethod
    def backward(ctx, grad):
        return _Interleave.apply(grad)


def _check_phases(phases) -> None:
    if not torch.is_tensor(phases) or phases.dim() != 4 or phases.shape[1] % 4 or min(phases.shape[2:]) < 2:
        raise ValueError("subpixel_interleave expects phases (B, 4C, H+1, W+1) with H, W >= 1, got "
                         f"{tuple(phases.shape) if torch.is_tensor(phases) else type(phases).__name__}")


def subpixel_interleave(phases: torch.Tensor) -> torch.Tensor:
    """The pixel shuffle of the sub-pixel conv: (B, 4C, H+1, W+1) -> (B, C, 2H, 2W).

    Channel 4c + 2a + b of ``phases`` holds phase (a, b); output pixel (2i + a, 2j + b) =
    phases[:, 4c + 2a + b, i + a, j + b]. Output in phases' memory format (NCHW or NHWC).
    """
    _check_phases(phases)
    if not (phases.requires_grad and torch.is_grad_enabled()):
        return _interleave(phases)
    return _Interleave.apply(phases)


def subpixel_deinterleave(grid: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`subpixel_interleave`: (B, C, 2H, 2W) -> (B, 4C, H+1, W+1), every
    pixel at the phase position the interleave reads it from and zeros elsewhere."""
    if not torch.is_tensor(grid) or grid.dim() != 4 or grid.shape[2] % 2 or grid.shape[3] % 2:
        raise ValueError("subpixel_deinterleave expects (B, C, 2H, 2W), got "
                         f"{tuple(grid.shape) if torch.is_tensor(grid) else type(grid).__name__}")
    if not (grid.requires_grad and torch.is_grad_enabled()):
        return _deinterleave(grid)
    return _Deinterleave.apply(grid)
