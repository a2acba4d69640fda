"""Python side of the C++/CUDA extension ``attnfast._C`` (csrc/): its forward/backward entry
points as differentiable ``torch.library`` custom ops, which are the ``cpu`` and ``cuda`` backends
of the attention and DAMSM ops. As custom ops (with fake implementations) they pass through
torch.compile and CUDA-graph capture without graph breaks.

The kernels take float32, bfloat16 and float16 inputs of any strides (accumulating in float32)
and return outputs and gradients in the input dtype. float64 inputs run the reference math: the
kernels compute in float32, and float64 is asked for where exactness matters (gradcheck).
Imported only when ``attnfast._C`` exists (see ``_dispatch.extension_usable``).
"""
import torch

from attnfast import _C, reference

__all__ = ["word_region_attention_extension", "damsm_scores_extension"]

_EMPTY = (0,)  # an output that was not asked for: custom ops return tensors, not None


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
@torch.library.custom_op("attnfast::ext_damsm_scores", mutates_args=())
def _damsm(regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor, gamma1: float,
           gamma2: float, return_attn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    scores, attn = _C.damsm_forward(regions, words, cap_lens, gamma1, gamma2, return_attn)
    return scores, (attn if return_attn else regions.new_empty(_EMPTY))


@_damsm.register_fake
def _damsm_fake(regions, words, cap_lens, gamma1, gamma2, return_attn):
    n_img, n_sent = regions.shape[0], words.shape[0]
    attn_shape = (n_img, n_sent, words.shape[2], regions.shape[2]) if return_attn else _EMPTY
    return regions.new_empty((n_img, n_sent)), regions.new_empty(attn_shape)


@torch.library.custom_op("attnfast::ext_damsm_scores_backward", mutates_args=())
def _damsm_backward(regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor,
                    gamma1: float, gamma2: float,
                    dscores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _C.damsm_backward(regions, words, cap_lens, gamma1, gamma2, dscores)


@_damsm_backward.register_fake
def _damsm_backward_fake(regions, words, cap_lens, gamma1, gamma2, dscores):
    return (torch.empty_like(regions, memory_format=torch.contiguous_format),
            torch.empty_like(words, memory_format=torch.contiguous_format))


def _damsm_setup(ctx, inputs, output):
    regions, words, cap_lens, gamma1, gamma2, _ = inputs
    ctx.save_for_backward(regions, words, cap_lens)
    ctx.gammas = (gamma1, gamma2)


def _damsm_grad(ctx, dscores, dattn):
    regions, words, cap_lens = ctx.saved_tensors
    dregions, dwords = _damsm_backward(regions, words, cap_lens, *ctx.gammas, dscores)
    return dregions, dwords, None, None, None, None


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
    scores, attn = _damsm(regions, words, cap_lens, float(gamma1), float(gamma2), return_attn)
    return (scores, attn.detach()) if return_attn else scores
