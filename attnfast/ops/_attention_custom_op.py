"""The Triton word–region attention as torch.library custom ops (the ``triton`` backend).

``attnfast::word_region_attention_triton`` (forward) and ``..._backward`` are opaque to
torch.compile (a fake implementation gives the output shapes), so compiled graphs and CUDA-graph
capture go through the kernels without graph breaks. ``register_autograd`` makes the forward op
differentiable (PyTorch builds the autograd.Function from it): gradients reach h and words, from
``out`` and also from ``attn`` when the attention map is returned and used.
"""
import torch

from attnfast.kernels.attention import attention_backward, attention_forward, check_supported

_EMPTY = (0,)   # the attn output when it is not asked for: custom ops return tensors, not None


@torch.library.custom_op("attnfast::word_region_attention_triton", mutates_args=())
def _forward(h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None, mask_mode: str,
             return_attn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    out, attn = attention_forward(h, words, mask, mask_mode, return_attn)
    return out, (attn if return_attn else h.new_empty(_EMPTY))


@_forward.register_fake
def _forward_fake(h, words, mask, mask_mode, return_attn):
    batch, _, height, width = h.shape
    attn_shape = (batch, words.shape[2], height, width) if return_attn else _EMPTY
    return torch.empty_like(h, memory_format=torch.contiguous_format), h.new_empty(attn_shape)


@torch.library.custom_op("attnfast::word_region_attention_triton_backward", mutates_args=())
def _backward_op(grad_out: torch.Tensor, grad_attn: torch.Tensor | None, h: torch.Tensor,
                 words: torch.Tensor, mask: torch.Tensor | None,
                 mask_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_backward(grad_out, grad_attn, h, words, mask, mask_mode)


@_backward_op.register_fake
def _backward_fake(grad_out, grad_attn, h, words, mask, mask_mode):
    return (torch.empty_like(h, memory_format=torch.contiguous_format),
            torch.empty_like(words, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    h, words, mask, mask_mode, return_attn = inputs
    ctx.save_for_backward(h, words, mask)
    ctx.mask_mode, ctx.return_attn = mask_mode, return_attn


def _backward(ctx, grad_out, grad_attn):
    h, words, mask = ctx.saved_tensors
    dh, dwords = _backward_op(grad_out, grad_attn if ctx.return_attn else None, h, words, mask,
                              ctx.mask_mode)
    return dh, dwords, None, None, None


_forward.register_autograd(_backward, setup_context=_setup_context)


def word_region_attention_triton(h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None = None,
                                 *, mask_mode: str = "correct", return_attn: bool = False):
    """Triton backend with the contract of :func:`attnfast.reference.word_region_attention`.

    h (B, C, H, W) and words (B, C, T) in float32/bfloat16/float16 (any strides, C <= 256,
    T <= 64), mask (B, T) bool or None. Returns out (B, C, H, W) [, attn (B, T, H, W)] in h's dtype,
    both differentiable. Arguments are assumed validated by :func:`attnfast.ops.word_region_attention`
    except for the kernel's own limits, checked here before any launch.
    """
    check_supported(h, words)
    out, attn = _forward(h, words, mask, mask_mode, return_attn)
    return (out, attn) if return_attn else out
