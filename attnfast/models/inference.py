"""The sampling path (DESIGN.md §3.3): fold every BatchNorm into the conv/linear before it.

:func:`fuse_for_inference` walks any module tree and returns an eval-mode copy in which

- every ``attnfast.ops.upBlock`` -- and every original-style ``nn.Sequential(nn.Upsample(2,
  nearest), 3x3 conv (stride 1, padding 1), BatchNorm2d, GLU)`` -- becomes a
  :class:`~attnfast.ops.blocks.FoldedUpBlock`: sub-pixel 2x2 conv with the BatchNorm folded in,
  then one bias + GLU + shuffle pass;
- every ``attnfast.ops.ResBlock`` becomes a :class:`~attnfast.ops.blocks.FoldedResBlock`;
- inside any other ``nn.Sequential``, a Conv2d / Linear directly followed by a BatchNorm
  (``Block3x3``, INIT_STAGE_G's Linear + BatchNorm1d, the original ResBlock's ``block``, ...)
  is folded: the conv/linear gets the bias, the BatchNorm becomes ``nn.Identity`` (Linear +
  BatchNorm1d as on (B, F) features, the only way the two compose there).

Only orders the module tree shows are folded (a Sequential's order); a BatchNorm used inside a
custom ``forward`` after a conv held elsewhere is left as is (in eval mode). The input model is
never modified.
"""
import copy
import itertools

import torch
from torch import nn

from attnfast import ops
from attnfast.ops.blocks import FoldedResBlock, FoldedUpBlock, fold_batch_norm

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def fuse_for_inference(model: nn.Module, *, channels_last: bool | None = None,
                       backend: str | None = None) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorms folded and upBlocks in sub-pixel form.

    Args:
        model: any nn.Module (a generator, a stage, a block); left untouched.
        channels_last: store 4-D weights channels_last (convs then run NHWC and so do the
            Triton epilogues, which follow their input's layout). Default: on for a model on
            CUDA; off on CPU, where NCHW measured 5-15% faster (bench/blocks_bench.py,
            fused vs fused-nchw rows).
        backend: backend of the folded blocks' epilogue (default: the blocks' own, else auto).
    Returns:
        The fused copy, in eval mode, with ``requires_grad`` off. Outputs equal the eval-mode
        original's up to float rounding.
    """
    fused = copy.deepcopy(model).eval()
    fused = _fuse(fused, backend)
    if channels_last is None:
        channels_last = any(t.is_cuda for t in fused.parameters()) or any(t.is_cuda for t in fused.buffers())
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    fused.requires_grad_(False)
    return fused


def _fuse(module: nn.Module, backend: str | None) -> nn.Module:
    replacement = _replacement(module, backend)
    if replacement is not None:
        return replacement
    for name, child in list(module.named_children()):
        new = _fuse(child, backend)
        if new is not child:
            setattr(module, name, new)
    if isinstance(module, nn.Sequential):
        _fold_sequential(module)
    return module


def _replacement(module: nn.Module, backend: str | None) -> nn.Module | None:
    if isinstance(module, ops.ResBlock):
        return FoldedResBlock(module.block, backend or module.backend)
    if isinstance(module, nn.Sequential) and _is_up_block(module):
        return FoldedUpBlock(module[1].weight, module[2], backend or getattr(module, "backend", None))
    return None


def _is_up_block(seq: nn.Sequential) -> bool:
    """upBlock's structure: Upsample(2x nearest), 3x3 conv (no bias, stride 1, padding 1), BN, GLU."""
    if len(seq) != 4:
        return False
    up, conv, bn, glu = seq
    return (isinstance(up, nn.Upsample) and up.mode == "nearest" and up.size is None
            and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
            and isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.bias is None and conv.padding_mode == "zeros"
            and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and type(glu).__name__ == "GLU")


def _fold_sequential(seq: nn.Sequential) -> None:
    """Fold each Conv2d/Linear + BatchNorm pair of ``seq`` in place (the BN becomes Identity)."""
    keys = list(seq._modules)
    for first, second in itertools.pairwise(keys):
        layer, bn = seq._modules[first], seq._modules[second]
        if not (isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(bn, _BATCH_NORMS)
                and bn.running_mean is not None and bn.num_features == layer.weight.shape[0]):
            continue
        weight, bias = fold_batch_norm(layer.weight, layer.bias, bn)
        folded = copy.deepcopy(layer)
        folded.weight = nn.Parameter(weight, requires_grad=False)
        folded.bias = nn.Parameter(bias, requires_grad=False)
        seq._modules[first] = folded
        seq._modules[second] = nn.Identity()
