"""attnfast's public ops. Every op validates its inputs, then runs the backend chosen by
``backend=`` (default ``$ATTNFAST_BACKEND`` or "auto"); the reference math lives in
:mod:`attnfast.reference`."""
from ._dispatch import BACKENDS, default_backend
from .attention import GlobalAttentionGeneral, word_region_attention
from .blocks import GLU, ResBlock, conv1x1, conv3x3, upBlock
from .damsm import damsm_scores, func_attention, sent_loss, words_loss

__all__ = [
    "BACKENDS", "default_backend", "word_region_attention", "GlobalAttentionGeneral",
    "damsm_scores", "func_attention", "words_loss", "sent_loss", "GLU", "upBlock", "ResBlock",
    "conv1x1", "conv3x3",
]
