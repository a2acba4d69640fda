"""attnfast's public ops. Every op validates its inputs, then runs the backend chosen by
``backend=`` (default ``$ATTNFAST_BACKEND`` or "auto"); the reference math lives in
:mod:`attnfast.reference`."""
from ._dispatch import BACKENDS, default_backend
from .attention import GlobalAttentionGeneral, word_region_attention
from .blocks import GLU, ResBlock, conv1x1, conv3x3, upBlock
from .damsm import damsm_scores, func_attention, sent_loss, words_loss

__all__ = [
    "BACKENDS",
    "GLU",
    "GlobalAttentionGeneral",
    "ResBlock",
    "conv1x1",
    "conv3x3",
    "damsm_scores",
    "default_backend",
    "func_attention",
    "sent_loss",
    "upBlock",
    "word_region_attention",
    "words_loss",
]
