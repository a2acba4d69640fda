"""The Triton DAMSM scores as torch.library custom ops (DESIGN.md §10), so that torch.compile traces
them without graph breaks and CUDA graphs capture them.

Ops (all functional, no mutation):
- ``attnfast::damsm_scores_triton(regions, words, cap_lens, gamma1, gamma2) -> scores`` with autograd;
- ``attnfast::damsm_scores_triton_backward(grad, regions, words, cap_lens, gamma1, gamma2)
  -> (d_regions, d_words)``, an op of its own so the traced backward graph stays opaque too;
- ``attnfast::damsm_attention_triton(regions, words, cap_lens, gamma1, gamma2) -> (scores, attn)``, no
  autograd: attention maps are for inspection.

Shapes: regions (B_img, D, R), words (B_sent, D, T), cap_lens (B_sent,) long, scores
(B_img, B_sent), attn (B_img, B_sent, T, R), all in the input dtype. Importing this module raises
ImportError when Triton is missing (the dispatcher reports it).
"""
import torch
from torch import Tensor

from attnfast.kernels import damsm as _kernels


@torch.library.custom_op("attnfast::damsm_scores_triton", mutates_args=())
def _scores_op(regions: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float,
               gamma2: float) -> Tensor:
    return _kernels.damsm_forward(regions, words, cap_lens, gamma1, gamma2)[0]


@_scores_op.register_fake
def _(regions, words, cap_lens, gamma1, gamma2):
    return regions.new_empty((regions.shape[0], words.shape[0]))


@torch.library.custom_op("attnfast::damsm_scores_triton_backward", mutates_args=())
def _backward_op(grad: Tensor, regions: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float,
                 gamma2: float) -> tuple[Tensor, Tensor]:
    return _kernels.damsm_backward(grad, regions, words, cap_lens, gamma1, gamma2)


@_backward_op.register_fake
def _(grad, regions, words, cap_lens, gamma1, gamma2):
    return torch.empty_like(regions), torch.empty_like(words)


@torch.library.custom_op("attnfast::damsm_attention_triton", mutates_args=())
def _attention_op(regions: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float,
                  gamma2: float) -> tuple[Tensor, Tensor]:
    return _kernels.damsm_forward(regions, words, cap_lens, gamma1, gamma2, return_attn=True)


@_attention_op.register_fake
def _(regions, words, cap_lens, gamma1, gamma2):
    n_img, n_sent = regions.shape[0], words.shape[0]
    return (regions.new_empty((n_img, n_sent)),
            regions.new_empty((n_img, n_sent, words.shape[2], regions.shape[2])))


def _setup_context(ctx, inputs, output):
    regions, words, cap_lens, gamma1, gamma2 = inputs
    ctx.save_for_backward(regions, words, cap_lens)
    ctx.gammas = (gamma1, gamma2)


def _backward(ctx, grad):
    regions, words, cap_lens = ctx.saved_tensors
    d_regions, d_words = _backward_op(grad, regions, words, cap_lens, *ctx.gammas)
    return d_regions, d_words, None, None, None


_scores_op.register_autograd(_backward, setup_context=_setup_context)


def damsm_scores_custom(img_regions: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float,
                        gamma2: float, *, return_attn: bool = False):
    """The triton backend of :func:`attnfast.ops.damsm_scores` through the custom ops: scores
    (B_img, B_sent) differentiable to both inputs; with ``return_attn`` also the attention
    (B_img, B_sent, T, R), not differentiable (one extra forward when gradients are needed)."""
    gamma1, gamma2 = float(gamma1), float(gamma2)
    if not return_attn:
        return _scores_op(img_regions, words, cap_lens, gamma1, gamma2)
    needs_grad = torch.is_grad_enabled() and (img_regions.requires_grad or words.requires_grad)
    scores, attn = _attention_op(img_regions.detach(), words.detach(), cap_lens, gamma1, gamma2)
    if needs_grad:
        scores = _scores_op(img_regions, words, cap_lens, gamma1, gamma2)
    return scores, attn
