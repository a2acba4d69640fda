"""Small helpers shared by the reference math."""
import torch


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half/bfloat16/float32 inputs, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` with ``mask`` (True = excluded) positions given weight 0.

    A slice whose positions are all masked gives all zeros (not NaN). ``mask`` broadcasts to
    ``scores``. Computed in the dtype of ``scores``.
    """
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    peak = scores.amax(dim=dim, keepdim=True).detach()
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    weights = torch.exp(scores - peak)
    total = weights.sum(dim=dim, keepdim=True)
    return weights / torch.where(total > 0, total, torch.ones_like(total))
