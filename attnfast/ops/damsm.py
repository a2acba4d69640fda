"""DAMSM matching (DESIGN.md §3.2): fused all-pairs scores, the losses, drop-ins."""
import torch

from attnfast import reference
from attnfast.reference.damsm import GAMMA1, GAMMA2, GAMMA3
from . import _validate as check
from ._dispatch import OpBackends, extension_usable, triton_usable

BACKENDS = OpBackends("damsm_scores")
BACKENDS.register("reference", lambda: reference.damsm_scores)


def _load_triton():
    """The torch.library custom op (torch.compile / CUDA-graph friendly) where torch has
    ``torch.library.custom_op`` (2.4+), else the plain autograd.Function."""
    from attnfast.kernels.damsm import damsm_scores_triton
    if not hasattr(torch.library, "custom_op"):
        return damsm_scores_triton
    from ._damsm_custom_op import damsm_scores_custom
    return damsm_scores_custom


def _load_extension():
    from attnfast.ops._extension import damsm_scores_extension
    return damsm_scores_extension


BACKENDS.register("triton", _load_triton, triton_usable)
BACKENDS.register("cpu", _load_extension, lambda d: (False, "cpu backend needs CPU tensors")
                  if d.type != "cpu" else extension_usable(d))
BACKENDS.register("cuda", _load_extension, lambda d: (False, "cuda backend needs CUDA tensors")
                  if d.type != "cuda" else extension_usable(d))


def _regions(name: str, img: torch.Tensor) -> torch.Tensor:
    check.tensor(name, img, ndim=(3, 4), expected="(B_img, D, R) or (B_img, D, H, W)")
    return img.flatten(2) if img.dim() == 4 else img


def damsm_scores(img_regions: torch.Tensor, words: torch.Tensor, cap_lens, gamma1: float = GAMMA1,
                 gamma2: float = GAMMA2, *, return_attn: bool = False, backend: str | None = None):
    """DAMSM word-level scores of every (image, sentence) pair.

    Args:
        img_regions: (B_img, D, R) or (B_img, D, H, W) region features.
        words: (B_sent, D, T) word features; positions t >= cap_lens[i] are ignored.
        cap_lens: (B_sent,) integers in [1, T].
        gamma1, gamma2: the attention sharpness and the LogSumExp factor (original: 4 and 5).
    Returns:
        (B_img, B_sent) scores in the input dtype; [j, i] = log sum_t exp(gamma2 * cos_t) of image
        j against sentence i. As the original code, and unlike the paper's Eq. 10, there is no
        1/gamma2 factor. With ``return_attn`` also the region attention (B_img, B_sent, T, R).
    """
    regions = _regions("img_regions", img_regions)
    check.tensor("words", words, ndim=3, expected="(B_sent, D, T)")
    check.same_device_dtype("img_regions", regions, words=words)
    check.dim_equals("words", words, 1, regions.shape[1], "(B_sent, D, T)", "D of img_regions")
    lens = check.cap_lens(cap_lens, words.shape[0], words.shape[2], words.device)
    _, impl = BACKENDS.pick(backend, regions.device)
    return impl(regions, words, lens, float(gamma1), float(gamma2), return_attn=return_attn)


def func_attention(query: torch.Tensor, context: torch.Tensor, gamma1: float = GAMMA1):
    """Drop-in for the original ``func_attention``: query (B, D, T), context (B, D, H, W) ->
    (weightedContext (B, D, T), attn (B, T, H, W)), no padding mask (as the original)."""
    check.tensor("query", query, ndim=3, expected="(B, D, T)")
    check.tensor("context", context, ndim=4, expected="(B, D, H, W)")
    check.same_device_dtype("query", query, context=context)
    check.dim_equals("context", context, 0, query.shape[0], "(B, D, H, W)", "B of query")
    check.dim_equals("context", context, 1, query.shape[1], "(B, D, H, W)", "D of query")
    return reference.func_attention(query, context, gamma1)


def _labels(labels, batch: int, device) -> torch.Tensor | None:
    if labels is None:
        return None
    labels = torch.as_tensor(labels, device=device)
    if labels.shape != (batch,) or labels.dtype != torch.long:
        raise ValueError(f"labels must be a (B,) = ({batch},) long tensor, got shape "
                         f"{tuple(labels.shape)}, dtype {labels.dtype}")
    return labels


def _class_ids(class_ids, batch: int):
    if class_ids is None:
        return None
    ids = class_ids if torch.is_tensor(class_ids) else torch.as_tensor(class_ids)
    if ids.dim() != 1 or ids.shape[0] < batch:
        raise ValueError(f"class_ids must be a (B,) = ({batch},) sequence, got shape {tuple(ids.shape)}")
    return ids


def _batch_size(batch_size: int, available: int, name: str) -> int:
    if not 1 <= int(batch_size) <= available:
        raise ValueError(f"batch_size={batch_size} must lie in [1, {available}] ({name} holds {available})")
    return int(batch_size)


def words_loss(img_features, words_emb, labels, cap_lens, class_ids, batch_size,
               gamma1: float = GAMMA1, gamma2: float = GAMMA2, gamma3: float = GAMMA3, *,
               backend: str | None = None):
    """Drop-in for the original ``words_loss``: returns (loss0, loss1, att_maps).

    img_features (B, D, H, W), words_emb (B, D, T), labels (B,) long (or None: losses are None),
    cap_lens (B,), class_ids (B,) or None (same-class pairs are excluded). loss0 is the cross-
    entropy over sentences for each image, loss1 over images for each sentence; att_maps is a list
    of B tensors (1, cap_lens[i], H, W) of the matched pairs.
    """
    check.tensor("img_features", img_features, ndim=4, expected="(B, D, H, W)")
    check.tensor("words_emb", words_emb, ndim=3, expected="(B, D, T)")
    batch = _batch_size(batch_size, min(img_features.shape[0], words_emb.shape[0]), "the inputs")
    lens = check.cap_lens(torch.as_tensor(cap_lens)[:batch] if not torch.is_tensor(cap_lens) else cap_lens[:batch],
                          batch, words_emb.shape[2], words_emb.device)
    regions = img_features[:batch].flatten(2)
    words = words_emb[:batch]
    scores = damsm_scores(regions, words, lens, gamma1, gamma2, backend=backend) * gamma3
    loss0, loss1 = reference.matching_losses(scores, _labels(labels, batch, scores.device),
                                             _class_ids(class_ids, batch))
    with torch.no_grad():
        attn = reference.matched_attention(regions, words, lens, gamma1)
    ih, iw = img_features.shape[2:]
    att_maps = [attn[i:i + 1, :n].reshape(1, n, ih, iw) for i, n in enumerate(lens.tolist())]
    return loss0, loss1, att_maps


def sent_loss(cnn_code, rnn_code, labels, class_ids, batch_size, eps: float = 1e-8,
              gamma3: float = GAMMA3):
    """Drop-in for the original ``sent_loss``: cnn_code (B, D), rnn_code (B, D) -> (loss0, loss1)."""
    check.tensor("cnn_code", cnn_code, ndim=2, expected="(B, D)")
    check.tensor("rnn_code", rnn_code, ndim=2, expected="(B, D)")
    check.dim_equals("rnn_code", rnn_code, 1, cnn_code.shape[1], "(B, D)", "D of cnn_code")
    if rnn_code.device != cnn_code.device:
        raise ValueError(f"rnn_code is on {rnn_code.device} but cnn_code is on {cnn_code.device}")
    batch = _batch_size(batch_size, min(cnn_code.shape[0], rnn_code.shape[0]), "the codes")
    scores = reference.sentence_scores(cnn_code[:batch], rnn_code[:batch].to(cnn_code.dtype), eps) * gamma3
    return reference.matching_losses(scores, _labels(labels, batch, scores.device),
                                     _class_ids(class_ids, batch))
