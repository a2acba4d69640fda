"""Captions to the generator's inputs: token ids padded to WORDS_NUM, lengths, and what was kept."""
import logging
from typing import NamedTuple

import numpy as np
import torch

from attnfast.data import tokenize
from .errors import GenerationError

LOG = logging.getLogger("attnfast")


class EncodedCaptions(NamedTuple):
    """ids (N, words_num) long, 0 = padding; lens (N,) long; per caption, ``tokens``: the words as
    the model sees them (unknown words as ``<unk>`` or dropped, cut to words_num), and ``unknown``:
    the words not in the vocabulary, each once, in order of appearance."""
    ids: torch.Tensor
    lens: torch.Tensor
    tokens: list[list[str]]
    unknown: list[list[str]]


def encode_captions(captions: list[str], vocab, words_num: int, warn: bool = True) -> EncodedCaptions:
    """Tokenize and look up ``captions`` in ``vocab``.

    Unknown words become ``<unk>`` when the vocabulary has it, else they are dropped (the original
    AttnGAN drops them); they are returned per caption and, with ``warn``, listed in one warning, as
    is a caption cut to ``words_num`` words. A caption with no word, or none the model knows, raises
    :class:`GenerationError` with its ``index``.
    """
    ids, kept, unknown = [], [], []
    for index, text in enumerate(captions):
        tokens = tokenize(text)
        if not tokens:
            raise GenerationError(f"caption {text!r} has no words", index)
        row, words, missing = [], [], []
        for token in tokens:
            if token in vocab and vocab.wordtoix[token] != 0:
                row.append(vocab.wordtoix[token])
                words.append(token)
                continue
            if token not in missing:
                missing.append(token)
            if "<unk>" in vocab:
                row.append(vocab.wordtoix["<unk>"])
                words.append("<unk>")
        if not row:
            raise GenerationError(f"caption {text!r} has no word the model knows", index)
        if len(row) > words_num:
            if warn:
                LOG.warning("attnfast: caption %r has %d known words; keeping the first %d",
                            text, len(row), words_num)
            row, words = row[:words_num], words[:words_num]
        ids.append(row)
        kept.append(words)
        unknown.append(missing)
    every_unknown = sorted({word for words in unknown for word in words})
    if warn and every_unknown:
        action = "mapped to <unk>" if "<unk>" in vocab else "dropped"
        LOG.warning("attnfast: words not in the vocabulary %s: %s", action, ", ".join(every_unknown))
    # every row is non-empty, at most words_num long and free of the padding id 0, so padding is a
    # copy: done in numpy, with no torch op per caption (the server calls this on its event loop)
    padded = np.zeros((len(ids), words_num), dtype=np.int64)
    for index, row in enumerate(ids):
        padded[index, :len(row)] = row
    lens = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    return EncodedCaptions(torch.from_numpy(padded), torch.from_numpy(lens), kept, unknown)
