"""Argument checks run before any kernel: errors name the argument and the expected shape."""
import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def tensor(name: str, value, *, ndim: int | tuple[int, ...], expected: str,
           dtypes=FLOAT_DTYPES) -> torch.Tensor:
    """``value`` must be a tensor of rank ``ndim`` and one of ``dtypes``; ``expected`` names the
    shape for the message, e.g. "(B, C, H, W)"."""
    if not torch.is_tensor(value):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(value).__name__}")
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if value.dim() not in ranks:
        raise ValueError(f"{name} must have shape {expected} ({' or '.join(map(str, ranks))} dims), "
                         f"got {_describe(value)}")
    if dtypes is not None and value.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {_describe(value)}")
    if any(s == 0 for s in value.shape):
        raise ValueError(f"{name} must not be empty, got {_describe(value)}")
    return value


def same_device_dtype(reference_name: str, reference: torch.Tensor, **others: torch.Tensor) -> None:
    for name, value in others.items():
        if value.device != reference.device:
            raise ValueError(f"{name} is on {value.device} but {reference_name} is on {reference.device}")
        if value.dtype != reference.dtype:
            raise TypeError(f"{name} has dtype {value.dtype} but {reference_name} has {reference.dtype}")


def dim_equals(name: str, value: torch.Tensor, dim: int, size: int, expected: str, why: str) -> None:
    if value.shape[dim] != size:
        raise ValueError(f"{name} must have shape {expected} with size {size} at dim {dim} ({why}), "
                         f"got {_describe(value)}")


def word_mask(mask, batch: int, num_words: int, device: torch.device) -> torch.Tensor | None:
    """A (B, T) padding mask (True = padding), bool or legacy uint8 0/1; returned as bool."""
    if mask is None:
        return None
    if not torch.is_tensor(mask):
        raise TypeError(f"mask must be a (B, T) = ({batch}, {num_words}) bool tensor, got {type(mask).__name__}")
    if mask.dtype not in (torch.bool, torch.uint8):
        raise TypeError(f"mask must be bool (True = padding) of shape (B, T) = ({batch}, {num_words}), "
                        f"got {_describe(mask)}")
    if tuple(mask.shape) != (batch, num_words):
        raise ValueError(f"mask must have shape (B, T) = ({batch}, {num_words}), got {_describe(mask)}")
    if mask.device != device:
        raise ValueError(f"mask is on {mask.device} but the features are on {device}")
    return mask if mask.dtype == torch.bool else mask.ne(0)


def cap_lens(value, batch: int, num_words: int, device: torch.device) -> torch.Tensor:
    """(B,) integer caption lengths with 1 <= len <= T, as a long tensor on ``device``.

    Values are checked except while a CUDA graph is captured or torch.compile traces (the check
    reads the values back: a host sync, a graph break).
    """
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(value)
        except Exception as exc:
            raise TypeError(f"cap_lens must be a (B,) integer tensor or sequence, got {type(value).__name__}") from exc
    if value.dim() != 1 or value.shape[0] != batch:
        raise ValueError(f"cap_lens must have shape (B,) = ({batch},), got shape {tuple(value.shape)}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"cap_lens must be an integer tensor, got dtype {value.dtype}")
    capturing = value.is_cuda and torch.cuda.is_current_stream_capturing()
    if not capturing and not torch.compiler.is_compiling():
        low, high = int(value.min()), int(value.max())
        if low < 1 or high > num_words:
            raise ValueError(f"cap_lens must lie in [1, T={num_words}], got values in [{low}, {high}]")
    return value.to(device=device, dtype=torch.long)
