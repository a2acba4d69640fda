"""Argument checks for the models: errors name the argument, the expected shape and what came."""
import torch


def describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def tensor(name: str, value, ndim: int, expected: str, *, floating: bool | None = None) -> torch.Tensor:
    """``value`` must be a non-empty tensor of rank ``ndim``; ``floating`` True/False asks for a
    floating/integer dtype, None accepts any."""
    if not torch.is_tensor(value):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"{name} must have shape {expected}, got {describe(value)}")
    if any(s == 0 for s in value.shape):
        raise ValueError(f"{name} must not be empty, got {describe(value)}")
    if floating is True and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor of shape {expected}, got {describe(value)}")
    if floating is False and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor of shape {expected}, got {describe(value)}")
    return value


def size(name: str, value: torch.Tensor, dim: int, expected_size: int, expected: str, why: str) -> None:
    if value.shape[dim] != expected_size:
        raise ValueError(f"{name} must have shape {expected} with size {expected_size} at dim {dim} "
                         f"({why}), got {describe(value)}")


def may_sync(value: torch.Tensor) -> bool:
    """Whether reading ``value``'s contents on the host is allowed (not during CUDA-graph capture)."""
    return not (value.is_cuda and torch.cuda.is_current_stream_capturing())
