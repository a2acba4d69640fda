"""Vocabulary, tokenizer and caption padding, with AttnGAN's conventions.

Index 0 is ``<end>`` and doubles as the padding id (AttnGAN: ``ixtoword[0] = '<end>'``).
Tokens are the lowercase ``\\w+`` runs of a caption (AttnGAN: ``RegexpTokenizer(r'\\w+')``
applied to ``cap.lower()``).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = ["END_TOKEN", "PAD_ID", "Vocabulary", "pad_captions", "tokenize"]

END_TOKEN = "<end>"
PAD_ID = 0
_TOKEN_RE = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and return its ``\\w+`` tokens (punctuation is dropped)."""
    return _TOKEN_RE.findall(text.lower())


class Vocabulary:
    """Two-way word <-> index map; index 0 is ``<end>`` (padding).

    ``Vocabulary(words)`` gives ``words[k]`` the index ``k + 1``; ``words`` must be
    distinct tokens (as :func:`tokenize` would produce them) and must not contain ``<end>``.
    """

    def __init__(self, words: Iterable[str]):
        words = list(words)
        seen: set[str] = set()
        for w in words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"vocabulary words must be non-empty strings, got {w!r}")
            if w == END_TOKEN:
                raise ValueError(f"{END_TOKEN!r} is index 0 implicitly; do not list it")
            if w in seen:
                raise ValueError(f"duplicate vocabulary word {w!r}")
            seen.add(w)
        self.ixtoword: list[str] = [END_TOKEN] + words
        self.wordtoix: dict[str, int] = {w: i for i, w in enumerate(self.ixtoword)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Vocabulary of every token seen at least ``min_count`` times, in first-seen order."""
        counts: Counter[str] = Counter()
        for cap in captions:
            counts.update(tokenize(cap))
        # Counter keeps insertion order, so the indices follow first appearance, as AttnGAN's do.
        return cls(w for w, c in counts.items() if c >= min_count and w != END_TOKEN)

    def __len__(self) -> int:
        return len(self.ixtoword)

    def __contains__(self, word: str) -> bool:
        return word in self.wordtoix

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.ixtoword == other.ixtoword

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    def encode(self, text: str, max_len: int | None = None, unknown: str = "error") -> list[int]:
        """Token ids of ``text`` (no ``<end>`` appended); the first ``max_len`` if given.

        ``unknown="error"`` raises ``ValueError`` naming the word and the caption;
        ``unknown="skip"`` drops unknown words.
        """
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', got {unknown!r}")
        ids = []
        for tok in tokenize(text):
            ix = self.wordtoix.get(tok)
            if ix is None or ix == PAD_ID:
                if unknown == "skip":
                    continue
                raise ValueError(f"unknown word {tok!r} in caption {text!r}")
            ids.append(ix)
        return ids if max_len is None else ids[:max_len]

    def decode(self, ids: Sequence[int] | torch.Tensor | np.ndarray) -> str:
        """Words of ``ids`` joined by spaces; padding ids (0) are skipped."""
        if isinstance(ids, (torch.Tensor, np.ndarray)):
            ids = ids.tolist()
        words = []
        for ix in ids:
            ix = int(ix)
            if ix == PAD_ID:
                continue
            if not 0 < ix < len(self.ixtoword):
                raise ValueError(f"id {ix} out of range for a vocabulary of {len(self)}")
            words.append(self.ixtoword[ix])
        return " ".join(words)

    def to_dict(self) -> dict:
        """Plain dict (str and list of str only): safe for ``torch.load(weights_only=True)``."""
        return {"format": "attnfast.vocab/1", "ixtoword": list(self.ixtoword)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        """Inverse of :meth:`to_dict`."""
        ixtoword = d.get("ixtoword") if isinstance(d, dict) else None
        if not isinstance(ixtoword, list) or not ixtoword or ixtoword[0] != END_TOKEN:
            raise ValueError("not a vocabulary dict: need 'ixtoword' starting with '<end>'")
        return cls(ixtoword[1:])


def pad_captions(
    captions: Sequence[Sequence[int]],
    max_len: int,
    *,
    sort: bool = False,
    random_drop: np.random.Generator | None = None,
):
    """Pad token-id lists into a batch.

    Returns ``(caps, cap_lens)``: ``caps`` LongTensor (B, max_len) padded with 0,
    ``cap_lens`` LongTensor (B,) with ``1 <= cap_lens <= max_len``.
    With ``sort=True`` rows are ordered by decreasing length (ties keep input order) and a
    third tensor ``order`` (B,) long is returned, with ``caps[k]`` built from ``captions[order[k]]``.

    Captions longer than ``max_len`` keep their first ``max_len`` words; with ``random_drop``
    a random subset of ``max_len`` words is kept in order (AttnGAN's train-time behaviour).
    Empty captions and ids of 0 inside a caption raise ``ValueError``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    b = len(captions)
    caps = torch.zeros((b, max_len), dtype=torch.long)
    lens = torch.zeros((b,), dtype=torch.long)
    for row, cap in enumerate(captions):
        cap = np.asarray(cap, dtype=np.int64).reshape(-1)
        n = cap.shape[0]
        if n == 0:
            raise ValueError(f"caption {row} is empty (cap_len must be >= 1)")
        if (cap == PAD_ID).any():
            raise ValueError(f"caption {row} contains the padding id 0: {cap.tolist()}")
        if n > max_len:
            if random_drop is None:
                cap = cap[:max_len]
            else:
                cap = cap[np.sort(random_drop.permutation(n)[:max_len])]
            n = max_len
        caps[row, :n] = torch.from_numpy(cap)
        lens[row] = n
    if not sort:
        return caps, lens
    order = torch.as_tensor(sorted(range(b), key=lambda k: -int(lens[k])), dtype=torch.long)
    return caps[order], lens[order], order
