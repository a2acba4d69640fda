"""The torch device of a ``--device`` option (every command line)."""
import torch


def pick_device(name: str | None) -> torch.device:
    """``None`` or "auto": CUDA when available, else the CPU; otherwise ``torch.device(name)``
    (a CUDA device asked for on a machine without CUDA raises RuntimeError)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    return device
