"""Mixed precision: bf16 autocast (CPU and CUDA), fp16 autocast with a GradScaler."""
import contextlib
import logging

import torch

LOG = logging.getLogger("attnfast")

AMP_MODES = ("off", "bf16", "fp16")


def amp_dtype(mode: str) -> torch.dtype | None:
    if mode not in AMP_MODES:
        raise ValueError(f"--amp must be one of {AMP_MODES}, got {mode!r}")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_mode(device: torch.device) -> str:
    """The mode ``--amp auto`` picks (the default of ``python -m attnfast.train`` and ``make demo``,
    logged): bf16 where the device computes it natively (CUDA GPUs from
    Ampere on, CPUs with AVX512-BF16/AMX), fp16 with a GradScaler on older GPUs, and "off" on a CPU
    without native bf16, where bf16 autocast is emulated and several times slower than fp32
    (measured 4.5x on a 2-core AVX2 machine); ``--amp bf16`` still forces it there."""
    if device.type == "cuda":
        mode = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        LOG.info("--amp: %s", "bf16 autocast (this GPU computes bf16 natively)" if mode == "bf16" else
                 "fp16 autocast with a GradScaler (this GPU has no native bf16)")
        return mode
    if device.type == "cpu" and not cpu_has_native_bf16():
        LOG.info("--amp: this CPU has no native bf16 (AVX512-BF16/AMX), where bf16 autocast is slower "
                 "than fp32: training in fp32 (--amp bf16 forces bf16)")
        return "off"
    if device.type == "cpu":
        LOG.info("--amp: bf16 autocast (this CPU computes bf16 natively: AVX512-BF16/AMX; --amp off "
                 "trains in fp32)")
    return "bf16"


def resolve(mode: str, device: torch.device) -> str:
    """``mode`` with "auto" replaced by :func:`default_mode`; other modes checked and kept."""
    if mode == "auto":
        return default_mode(device)
    amp_dtype(mode)
    return mode


def autocast(mode: str, device: torch.device):
    """The autocast context for ``mode`` on ``device`` (a null context when off)."""
    dtype = amp_dtype(mode)
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(mode: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=(mode == "fp16"))
