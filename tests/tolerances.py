"""One place for numerical tolerances and the comparison helper used by every op test.

Rule (DESIGN.md §8): measure ||out - ref|| / ||ref|| against a float64 reference; a fast path's
error must stay within 2x the error of plain PyTorch in the same dtype (the ``baseline``), with a
small floor per dtype so that a baseline that happens to be exact does not demand exactness.
Without a baseline the per-dtype cap applies. NaN never passes.
"""
import torch

# Relative-L2 caps when no baseline is given, and floors under 2x-baseline bounds.
REL_CAP = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}
REL_FLOOR = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 4e-3, torch.float16: 6e-4}
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    denom = expected.norm().item()
    diff = (actual - expected).norm().item()
    return diff / denom if denom > 0 else diff


def _where(actual: torch.Tensor, expected: torch.Tensor) -> str:
    diff = (actual.detach().double() - expected.detach().double()).abs()
    flat = int(torch.nan_to_num(diff, nan=float("inf")).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.dim() else ()
    return (f"max abs diff {diff.max().item():.3e} at {index}: got {actual.reshape(-1)[flat].item():.6g}, "
            f"expected {expected.reshape(-1)[flat].item():.6g}")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype | None = None,
                 baseline: torch.Tensor | None = None, name: str = "output") -> None:
    """Assert ``actual`` (any dtype) matches ``expected`` (ideally float64).

    ``dtype``: the compute dtype judged (defaults to actual's). ``baseline``: plain PyTorch's result
    in that dtype; the bound is then max(2 * baseline error, floor).
    """
    dtype = dtype or actual.dtype
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: contains NaN ({int(torch.isnan(actual).sum())} elements)"
    err = rel_error(actual, expected)
    if baseline is not None:
        bound = max(2.0 * rel_error(baseline, expected), REL_FLOOR[dtype])
    else:
        bound = REL_CAP[dtype]
    assert err <= bound, (f"{name} ({dtype}): relative L2 error {err:.3e} > bound {bound:.3e}; "
                          f"{_where(actual, expected)}")


def nan_filled_like(t: torch.Tensor) -> torch.Tensor:
    """An output buffer pre-filled with NaN, so that unwritten elements are caught."""
    return torch.full_like(t, float("nan"))
