"""Python side of the C++/CUDA extension ``attnfast._C`` (csrc/): its forward/backward entry
points as differentiable ``torch.library`` custom ops, which are the ``cpu`` and ``cuda`` backends
of the attention and DAMSM ops. As custom ops (with fake implementations) they pass through
torch.compile and CUDA-graph capture without graph breaks.

The kernels take float32, bfloat16 and float16 inputs of any strides (accumulating in float32)
and return outputs and gradients in the input dtype. float64 inputs run the reference math: the
kernels compute in float32, and float64 is asked for where exactness matters (gradcheck).
DAMSM keeps the forward's intermediates (attention probabilities, contexts, cosines: one float32
buffer of 4 * (B_img * (B_sent*T * (2R + D + 2) + B_sent) + 1) bytes, 132 MiB at B = 48, D = 256,
R = 289, T = 18) for the backward when gradients are needed, the tensors are on the CPU and the
buffer fits the budget ``ATTNFAST_DAMSM_SAVE_MB`` (MiB, default 512; 0 turns it off); otherwise
the backward recomputes them (two more GEMMs, eight instead of six). Once freed, the buffer's
memory is kept for the next step's forward (one buffer at most; csrc/host_buffer.h), so that a
training loop does not fault in fresh pages every step. CUDA always recomputes (the C++ saved
path is device-agnostic but has not been run on a GPU).

Imported only when ``attnfast._C`` exists (see ``_dispatch.extension_usable``).
"""
import math
import os

import torch

from attnfast import _C, reference

__all__ = ["damsm_save_budget_bytes", "damsm_scores_extension", "word_region_attention_extension"]

_EMPTY = (0,)  # an output that was not asked for: custom ops return tensors, not None
SAVE_BUDGET_ENV = "ATTNFAST_DAMSM_SAVE_MB"
DEFAULT_SAVE_MB = 512


# ---------------------------------------------------------------- word–region attention
@torch.library.custom_op("attnfast::ext_word_region_attention", mutates_args=())
def _attention(h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None, attngan_mask: bool,
               return_attn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    out, attn = _C.attention_forward(h, words, mask, attngan_mask, return_attn)
    return out, (attn if return_attn else h.new_empty(_EMPTY))


@_attention.register_fake
def _attention_fake(h, words, mask, attngan_mask, return_attn):
    batch, _, height, width = h.shape
    attn_shape = (batch, words.shape[2], height, width) if return_attn else _EMPTY
    return torch.empty_like(h, memory_format=torch.contiguous_format), h.new_empty(attn_shape)


@torch.library.custom_op("attnfast::ext_word_region_attention_backward", mutates_args=())
def _attention_backward(h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None,
                        attngan_mask: bool, dout: torch.Tensor,
                        dattn: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    return _C.attention_backward(h, words, mask, attngan_mask, dout, dattn)


@_attention_backward.register_fake
def _attention_backward_fake(h, words, mask, attngan_mask, dout, dattn):
    return (torch.empty_like(h, memory_format=torch.contiguous_format),
            torch.empty_like(words, memory_format=torch.contiguous_format))


def _attention_setup(ctx, inputs, output):
    h, words, mask, attngan_mask, return_attn = inputs
    ctx.save_for_backward(h, words, mask)
    ctx.attngan_mask, ctx.return_attn = attngan_mask, return_attn


def _attention_grad(ctx, dout, dattn):
    h, words, mask = ctx.saved_tensors
    dh, dwords = _attention_backward(h, words, mask, ctx.attngan_mask, dout,
                                     dattn if ctx.return_attn else None)
    return dh, dwords, None, None, None


_attention.register_autograd(_attention_grad, setup_context=_attention_setup)


# ---------------------------------------------------------------- DAMSM all-pair scores
def damsm_save_budget_bytes() -> int:
    """Bytes the DAMSM forward may keep for its backward: ``ATTNFAST_DAMSM_SAVE_MB`` MiB (default
    512; 0: always recompute), read at every call."""
    raw = os.environ.get(SAVE_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_SAVE_MB << 20
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not (math.isfinite(megabytes) and megabytes >= 0):
        raise ValueError(f"{SAVE_BUDGET_ENV} must be a number of MiB >= 0, got {raw!r}")
    return int(megabytes * (1 << 20))


def _saved_shape(regions: torch.Tensor, words: torch.Tensor) -> tuple[int]:
    """Shape of the DAMSM forward's saved intermediates (float32), as csrc/ops.h gives it:
    B_img * (B_sent*T * (2R + D + 2) + B_sent) + 1 elements."""
    n_img, dim, n_regions = regions.shape
    n_sent, n_words = words.shape[0], words.shape[2]
    return (n_img * (n_sent * n_words * (2 * n_regions + dim + 2) + n_sent) + 1,)


def _keep_intermediates(regions: torch.Tensor, words: torch.Tensor) -> bool:
    """Whether the DAMSM forward keeps its intermediates for the backward: a backward will run
    (grad mode, an input requiring grad), CPU tensors, and the buffer fits the budget."""
    if regions.device.type != "cpu" or not torch.is_grad_enabled():
        return False
    if not (regions.requires_grad or words.requires_grad):
        return False
    return 4 * _saved_shape(regions, words)[0] <= damsm_save_budget_bytes()


@torch.library.custom_op("attnfast::ext_damsm_scores", mutates_args=())
def _damsm(regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor, gamma1: float,
           gamma2: float, return_attn: bool,
           save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scores, attn, saved = _C.damsm_forward(regions, words, cap_lens, gamma1, gamma2, return_attn,
                                           None, save)
    return (scores, attn if return_attn else regions.new_empty(_EMPTY),
            saved if save else regions.new_empty(_EMPTY, dtype=torch.float32))


@_damsm.register_fake
def _damsm_fake(regions, words, cap_lens, gamma1, gamma2, return_attn, save):
    n_img, n_sent = regions.shape[0], words.shape[0]
    attn_shape = (n_img, n_sent, words.shape[2], regions.shape[2]) if return_attn else _EMPTY
    saved_shape = _saved_shape(regions, words) if save else _EMPTY
    return (regions.new_empty((n_img, n_sent)), regions.new_empty(attn_shape),
            regions.new_empty(saved_shape, dtype=torch.float32))


@torch.library.custom_op("attnfast::ext_damsm_scores_backward", mutates_args=())
def _damsm_backward(regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor,
                    gamma1: float, gamma2: float, dscores: torch.Tensor,
                    saved: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _C.damsm_backward(regions, words, cap_lens, gamma1, gamma2, dscores, None,
                             saved if saved.numel() else None)


@_damsm_backward.register_fake
def _damsm_backward_fake(regions, words, cap_lens, gamma1, gamma2, dscores, saved):
    return (torch.empty_like(regions, memory_format=torch.contiguous_format),
            torch.empty_like(words, memory_format=torch.contiguous_format))


def _damsm_setup(ctx, inputs, output):
    regions, words, cap_lens, gamma1, gamma2, _, _ = inputs
    ctx.save_for_backward(regions, words, cap_lens, output[2])
    ctx.gammas = (gamma1, gamma2)
    # Only the scores have a gradient: no zero tensors for attn and saved (138 MB at B = 48).
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)


def _damsm_grad(ctx, dscores, dattn, dsaved):
    if dscores is None:
        return None, None, None, None, None, None, None
    regions, words, cap_lens, saved = ctx.saved_tensors
    dregions, dwords = _damsm_backward(regions, words, cap_lens, *ctx.gammas, dscores, saved)
    return dregions, dwords, None, None, None, None, None


_damsm.register_autograd(_damsm_grad, setup_context=_damsm_setup)


# ---------------------------------------------------------------- the backends
def word_region_attention_extension(h: torch.Tensor, words: torch.Tensor, mask=None, *,
                                    mask_mode: str = "correct", return_attn: bool = False):
    """Same contract as :func:`attnfast.reference.word_region_attention` (inputs validated by
    :func:`attnfast.ops.word_region_attention`); both outputs are differentiable."""
    if h.dtype == torch.float64:
        return reference.word_region_attention(h, words, mask, mask_mode=mask_mode,
                                               return_attn=return_attn)
    if mask_mode not in reference.MASK_MODES:
        raise ValueError(f"mask_mode must be one of {reference.MASK_MODES}, got {mask_mode!r}")
    out, attn = _attention(h, words, mask, mask_mode == "attngan", return_attn)
    return (out, attn) if return_attn else out


def damsm_scores_extension(regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor,
                           gamma1: float = reference.GAMMA1, gamma2: float = reference.GAMMA2, *,
                           return_attn: bool = False):
    """Same contract as :func:`attnfast.reference.damsm_scores` (regions (B_img, D, R), words
    (B_sent, D, T), cap_lens (B_sent,) long). The attention maps are for display: detached."""
    if regions.dtype == torch.float64:
        return reference.damsm_scores(regions, words, cap_lens, gamma1, gamma2,
                                      return_attn=return_attn)
    save = _keep_intermediates(regions, words)
    scores, attn, _ = _damsm(regions, words, cap_lens, float(gamma1), float(gamma2), return_attn,
                             save)
    return (scores, attn.detach()) if return_attn else scores
