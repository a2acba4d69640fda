"""Mixed precision: bf16 autocast (CPU and CUDA), fp16 autocast with a GradScaler."""
import contextlib

import torch

AMP_MODES = ("off", "bf16", "fp16")


def amp_dtype(mode: str) -> torch.dtype | None:
    if mode not in AMP_MODES:
        raise ValueError(f"--amp must be one of {AMP_MODES}, got {mode!r}")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def default_mode(device: torch.device) -> str:
    """The mode a bare ``--amp`` picks: bf16 where the device has it (CPUs, CUDA GPUs from Ampere
    on), else fp16 with a GradScaler."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return "fp16"
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
