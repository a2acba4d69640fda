"""Small Triton helpers shared by the kernels in this folder (device functions and launch helpers).

Everything here runs on triton 3.6 (the GPU machines) and under the triton 3.9 CPU interpreter.
"""
import logging
import os

import torch
import triton
import triton.language as tl

LOG = logging.getLogger("attnfast")
TL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_launched: set[tuple] = set()


def log_first_launch(kernel: str, key: tuple) -> None:
    """Log once per (kernel, specialisation) that Triton JIT-compiles it (DESIGN.md §10)."""
    if (kernel, key) not in _launched:
        _launched.add((kernel, key))
        LOG.info("attnfast: compiling Triton kernel %s for %s (first call)", kernel, key)


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for tl.dot: IEEE fp32 for fp32 inputs (PyTorch does not use TF32 for
    matmuls by default, so TF32 would lose to the baseline); ignored for bf16/fp16 operands."""
    return "ieee" if dtype == torch.float32 else "tf32"


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (4 for the CPU interpreter: few programs run faster)."""
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def emulate_bf16(dtype: torch.dtype) -> bool:
    """True where the kernels must work around the triton 3.9 CPU interpreter's bf16: it multiplies
    bf16 dot operands as their raw uint16 bits and truncates fp32 -> bf16 instead of rounding to
    nearest even. :func:`dot` then upcasts (exact: bf16 x bf16 products fit fp32, so it gives what
    the GPU's bf16 dot gives) and :func:`cast` rounds to nearest even with integer ops. Never set on
    a GPU, where the native instructions already do both."""
    return dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def dot(a, b, acc, PRECISION: tl.constexpr, EMULATE: tl.constexpr):
    """acc + a @ b with fp32 accumulation (``EMULATE``: see :func:`emulate_bf16`)."""
    if EMULATE:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc=acc, input_precision="ieee")
    return tl.dot(a, b, acc=acc, input_precision=PRECISION)


@triton.jit
def cast(x, dtype: tl.constexpr, EMULATE: tl.constexpr):
    """x.to(dtype), rounding to nearest even (``EMULATE``: see :func:`emulate_bf16`)."""
    if EMULATE and dtype == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return x.to(dtype)


@triton.jit
def region_offsets(offs_n, width, stride_y, stride_x, FLAT: tl.constexpr):
    """Memory offsets of regions n = y * width + x of a (.., H, W) tensor with strides (stride_y,
    stride_x). ``FLAT`` (stride_y == width * stride_x, or H == 1) avoids the division."""
    if FLAT:
        return offs_n * stride_x
    return (offs_n // width) * stride_y + (offs_n % width) * stride_x


@triton.jit
def dot_f32_lhs(a, b, acc, PRECISION: tl.constexpr, EMULATE: tl.constexpr):
    """acc + a @ b with ``a`` in fp32 and ``b`` in the input dtype.

    For bf16/fp16 ``b``, ``a`` is split as hi + lo (both in b's dtype) and two tensor-core dots are
    summed: ~16 (bf16) or ~22 (fp16) bits of ``a`` survive instead of 8 or 11, so that a product of
    fp32 probabilities with low-precision features stays as accurate as fp32 math rounded once.
    """
    if b.dtype == tl.float32:
        return tl.dot(a, b, acc=acc, input_precision=PRECISION)
    hi = cast(a, b.dtype, EMULATE)
    lo = cast(a - hi.to(tl.float32), b.dtype, EMULATE)
    acc = dot(hi, b, acc, PRECISION, EMULATE)
    return dot(lo, b, acc, PRECISION, EMULATE)


@triton.jit
def dot_f32_rhs(a, b, acc, PRECISION: tl.constexpr, EMULATE: tl.constexpr):
    """acc + a @ b with ``a`` in the input dtype and ``b`` in fp32 (hi/lo split as dot_f32_lhs)."""
    if a.dtype == tl.float32:
        return tl.dot(a, b, acc=acc, input_precision=PRECISION)
    hi = cast(b, a.dtype, EMULATE)
    lo = cast(b - hi.to(tl.float32), a.dtype, EMULATE)
    acc = dot(a, hi, acc, PRECISION, EMULATE)
    return dot(a, lo, acc, PRECISION, EMULATE)
