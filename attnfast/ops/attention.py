"""Word–region attention (DESIGN.md §3.1): public function, backend table, drop-in module."""
import torch
from torch import nn

from attnfast import reference
from . import _validate as check
from ._dispatch import OpBackends, extension_usable, triton_usable

BACKENDS = OpBackends("word_region_attention")
BACKENDS.register("reference", lambda: reference.word_region_attention)


def _load_triton():
    # The kernels behind torch.library custom ops (compile / CUDA-graph friendly, differentiable).
    from ._attention_custom_op import word_region_attention_triton
    return word_region_attention_triton


def _load_extension():
    from attnfast.ops._extension import word_region_attention_extension
    return word_region_attention_extension


def _triton_accepts(h, words):
    from attnfast.kernels.attention import check_supported
    try:
        check_supported(h, words)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


BACKENDS.register("triton", _load_triton, triton_usable, _triton_accepts)
BACKENDS.register("cpu", _load_extension, lambda d: (False, "cpu backend needs CPU tensors")
                  if d.type != "cpu" else extension_usable(d))
BACKENDS.register("cuda", _load_extension, lambda d: (False, "cuda backend needs CUDA tensors")
                  if d.type != "cuda" else extension_usable(d))


def word_region_attention(h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None = None, *,
                          mask_mode: str = "correct", return_attn: bool = False,
                          backend: str | None = None):
    """Attention of every image region over the words of its caption.

    Args:
        h: (B, C, H, W) image features, float32/bfloat16/float16/float64.
        words: (B, C, T) word features projected to C channels, same dtype and device as ``h``.
        mask: optional (B, T) bool, True = padding word.
        mask_mode: "correct" (default) or "attngan" (the original's ``mask.repeat(queryL, 1)``).
        return_attn: also return the attention map (B, T, H, W).
        backend: "auto" | "reference" | "triton" | "cuda" | "cpu" (default ``$ATTNFAST_BACKEND``).
    Returns:
        out (B, C, H, W) in the input dtype [, attn (B, T, H, W)]. Regions whose words are all
        masked give zeros. Softmax and accumulation in float32.
    """
    check.tensor("h", h, ndim=4, expected="(B, C, H, W)")
    check.tensor("words", words, ndim=3, expected="(B, C, T)")
    check.same_device_dtype("h", h, words=words)
    batch, channels = h.shape[:2]
    check.dim_equals("words", words, 0, batch, "(B, C, T)", "B of h")
    check.dim_equals("words", words, 1, channels, "(B, C, T)", "C of h")
    mask = check.word_mask(mask, batch, words.shape[2], h.device)
    if mask_mode not in reference.MASK_MODES:
        raise ValueError(f"mask_mode must be one of {reference.MASK_MODES}, got {mask_mode!r}")
    _, impl = BACKENDS.pick(backend, h.device, (h, words))
    return impl(h, words, mask, mask_mode=mask_mode, return_attn=return_attn)


class GlobalAttentionGeneral(nn.Module):
    """Drop-in for AttnGAN's ``GlobalAttentionGeneral(idf, cdf)``.

    Same parameter (``conv_context.weight``, (idf, cdf, 1, 1)), ``applyMask(mask)`` and
    ``forward(input, context) -> (weightedContext, attn)`` with input (B, idf, H, W), context
    (B, cdf, T), weightedContext (B, idf, H, W), attn (B, T, H, W). Fully masked rows give zeros
    instead of the original's NaN; ``mask_mode="attngan"`` reproduces the original's misaligned
    mask so that released checkpoints sample as they did.
    """

    def __init__(self, idf: int, cdf: int, mask_mode: str = "correct", backend: str | None = None):
        super().__init__()
        if mask_mode not in reference.MASK_MODES:
            raise ValueError(f"mask_mode must be one of {reference.MASK_MODES}, got {mask_mode!r}")
        self.conv_context = nn.Conv2d(cdf, idf, kernel_size=1, stride=1, padding=0, bias=False)
        self.sm = nn.Softmax(dim=1)
        self.mask = None
        self.mask_mode = mask_mode
        self.backend = backend

    def applyMask(self, mask):  # noqa: N802 - the original's name
        self.mask = mask

    def forward(self, input, context):  # noqa: A002 - the original's argument name
        check.tensor("context", context, ndim=3, expected="(B, cdf, T)")
        idf, cdf = self.conv_context.weight.shape[:2]
        check.dim_equals("context", context, 1, cdf, "(B, cdf, T)", "cdf of conv_context")
        projection = self.conv_context.weight.view(idf, cdf).to(context.dtype)
        source = torch.matmul(projection, context)                        # (B, idf, T)
        return word_region_attention(input, source.to(input.dtype), self.mask,
                                     mask_mode=self.mask_mode, return_attn=True, backend=self.backend)
