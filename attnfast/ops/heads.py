"""Cheaper forms of the discriminators' score heads (issue 27), for their 4x4 codes.

On a 2-core CPU the heads' tiny convolutions run far below the matmul rate (a 3x3 conv on 4x4 maps
and a 4x4/stride-4 conv to one channel: ~10 GFLOP/s under oneDNN, its worst shapes). Two exact
rewrites of the same math:

- :func:`joint_conv3x3`: the conditional head's ``conv3x3(cat(h, sentence repeated over H x W))``
  as ``conv3x3(h)`` plus the sentence's part computed once per tap (B x K x 9 products instead of
  B x H x W x K x 9: the sentence is constant over space, so each output position adds the taps
  that fall inside the zero padding's border); the weight is cast once and split into its two parts
  by :class:`_SplitJointWeight` (bit-identical to autocast's casts of the two slices, ~0.5 ms less
  per call at the demo's B = 47);
- :func:`logits_full_kernel`: a conv whose kernel covers the whole (stride = kernel = H = W) map, one
  output position, as one matrix product.

Both equal the convolutions in exact arithmetic (tests/test_heads.py: float64 values and
gradients to 1e-12); in floating point they sum in another order. The discriminators use them
under autocast only, where the results already carry bf16 rounding (attnfast.models.discriminator).
"""
import functools

import torch
import torch.nn.functional as F

__all__ = ["joint_conv3x3", "logits_full_kernel"]


@functools.lru_cache(maxsize=64)
def _tap_positions(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(9, H*W): entry [3i + j, W*y + x] is 1 where output (y, x) of a 3x3 conv with padding 1 reads
    tap (i, j) inside the map (input (y + i - 1, x + j - 1) in range), else 0. Cached per shape."""
    def valid(size):                                                    # (size, 3)
        rows = torch.arange(size, device=device)[:, None] + torch.arange(3, device=device)[None, :] - 1
        return (rows >= 0) & (rows < size)
    rows, cols = valid(height), valid(width)
    return (rows.t()[:, None, :, None] & cols.t()[None, :, None, :]).reshape(9, height * width).to(dtype)


def _split(weight: torch.Tensor, channels: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    cast = weight.to(dtype)
    return (cast[:, :channels].contiguous(),                                      # (K, Ch, 3, 3)
            cast[:, channels:].transpose(0, 1).reshape(weight.shape[1] - channels, -1))   # (E, K*9)


class _SplitJointWeight(torch.autograd.Function):
    """weight (K, Ch + E, 3, 3) -> its image part (K, Ch, 3, 3) and its sentence part as (E, K*9),
    both contiguous in ``dtype``, one cast and one copy each; the gradient is the two parts' gradients
    side by side in one ``cat`` (autograd's two slices would zero-fill a weight-sized tensor each, add
    them and cast each part back)."""

    @staticmethod
    def forward(ctx, weight, channels: int, dtype: torch.dtype):
        ctx.channels, ctx.shape, ctx.weight_dtype = channels, tuple(weight.shape), weight.dtype
        return _split(weight, channels, dtype)

    @staticmethod
    def backward(ctx, grad_image, grad_taps):
        k, total = ctx.shape[0], ctx.shape[1]
        words = total - ctx.channels
        like = grad_image if grad_image is not None else grad_taps
        if grad_image is None:                       # a part whose output was unused gets zeros
            grad_image = like.new_zeros((k, ctx.channels, 3, 3))
        grad_sentence = (grad_taps.view(words, k, 3, 3).transpose(0, 1) if grad_taps is not None
                         else like.new_zeros((k, words, 3, 3)))
        return torch.cat((grad_image, grad_sentence), dim=1).to(ctx.weight_dtype), None, None


def _split_joint_weight(weight: torch.Tensor, channels: int, device_type: str):
    """The joint conv weight's two parts in the dtype its products run in (the autocast dtype under
    autocast, else the weight's own): see :class:`_SplitJointWeight`."""
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    if weight.requires_grad and torch.is_grad_enabled():
        return _SplitJointWeight.apply(weight, channels, dtype)
    return _split(weight, channels, dtype)


def joint_conv3x3(h: torch.Tensor, sentence: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(cat(h, sentence[:, :, None, None].expand(-1, -1, H, W)), weight, padding=1)``.

    h: (B, Ch, H, W); sentence: (B, E); weight: (K, Ch + E, 3, 3) (no bias). Returns (B, K, H, W)
    in the conv's dtype (bf16 under autocast).
    """
    if h.dim() != 4 or sentence.dim() != 2 or weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"joint_conv3x3 expects h (B, Ch, H, W), sentence (B, E), weight (K, Ch+E, 3, 3); "
                         f"got {tuple(h.shape)}, {tuple(sentence.shape)}, {tuple(weight.shape)}")
    channels = h.shape[1]
    if weight.shape[1] != channels + sentence.shape[1] or sentence.shape[0] != h.shape[0]:
        raise ValueError(f"joint_conv3x3: weight has {weight.shape[1]} input channels, h {channels} + "
                         f"sentence {sentence.shape[1]}; batches {h.shape[0]} and {sentence.shape[0]}")
    image_weight, per_tap = _split_joint_weight(weight, channels, h.device.type)   # (K, Ch, 3, 3), (E, K*9)
    out = F.conv2d(h, image_weight, padding=1)                                    # (B, K, H, W)
    taps = torch.matmul(sentence, per_tap)                                        # (B, K*9)
    # position (y, x) adds the taps (i, j) that fall inside the map: one product with the 0/1 map
    # (a matrix product per (B, K) of 3x3 taps ran as thousands of tiny batched products)
    positions = _tap_positions(h.shape[2], h.shape[3], taps.dtype, h.device)      # (9, H*W)
    border = torch.matmul(taps.view(-1, 9), positions).view(out.shape)            # (B, K, H, W)
    return out + border


def logits_full_kernel(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(h, weight, bias, stride=kernel)`` for a kernel the size of the map: (B, C, k, k)
    with weight (O, C, k, k) -> (B, O, 1, 1), as one ``F.linear``."""
    if h.dim() != 4 or weight.dim() != 4 or tuple(h.shape[1:]) != tuple(weight.shape[1:]):
        raise ValueError(f"logits_full_kernel expects h (B, C, k, k) and weight (O, C, k, k) of the same "
                         f"(C, k, k); got {tuple(h.shape)} and {tuple(weight.shape)}")
    out = F.linear(h.flatten(1), weight.flatten(1), bias)                         # (B, O)
    return out.view(h.shape[0], weight.shape[0], 1, 1)
