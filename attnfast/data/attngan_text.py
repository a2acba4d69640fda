"""Captions as AttnGAN reads them: caption files, ``captions.pickle``, the vocabulary it builds,
and the fixed-length caption of an item.

Follows the original ``datasets.py`` (``load_captions``, ``build_dictionary``, ``get_caption``):
a caption file holds one caption per line; empty lines and lines without tokens are passed over; the
first ``captions_per_image`` captions are kept; tokens are the lowercase ``\\w+`` runs with their
non-ASCII characters dropped. The vocabulary holds every word of the train *and* test captions
(the original's ``count >= 0``), in first-seen order, ``<end>`` at 0. Deviation: a caption file with
fewer than ``captions_per_image`` captions is an error naming the file (the original printed a
message and went on, shifting every later image's captions).
"""
from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from attnfast.engine.files import atomic_write
from .attngan_skips import BadDataError
from .safe_pickle import load_pickle
from .vocab import END_TOKEN, Vocabulary, pad_captions, tokenize

__all__ = [
    "caption_tensor",
    "caption_tokens",
    "encode_tokens",
    "load_captions_pickle",
    "read_caption_file",
    "save_captions_pickle",
    "vocabulary_from_ixtoword",
    "vocabulary_from_tokens",
]


def caption_tokens(text: str) -> list[str]:
    """Tokens of one caption line: lowercase ``\\w+`` runs, non-ASCII characters removed."""
    tokens = (t.encode("ascii", "ignore").decode("ascii")
              for t in tokenize(text.replace("\ufffd\ufffd", " ")))
    return [t for t in tokens if t]


def read_caption_file(path: str | Path, count: int) -> list[list[str]]:
    """The first ``count`` token lists of a caption file (one caption per line).

    Raises :class:`BadDataError` naming the file when it is missing, not UTF-8, or has fewer than
    ``count`` captions with tokens.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise BadDataError(f"caption file missing: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadDataError(f"caption file unreadable: {path} ({exc})") from None
    captions = []
    for line in text.split("\n"):
        tokens = caption_tokens(line)
        if tokens:
            captions.append(tokens)
            if len(captions) == count:
                return captions
    raise BadDataError(f"caption file has {len(captions)} captions, {count} needed: {path}")


def vocabulary_from_tokens(token_lists: Iterable[Sequence[str]]) -> Vocabulary:
    """Every word of ``token_lists`` in first-seen order (the original's ``build_dictionary``)."""
    words = dict.fromkeys(w for tokens in token_lists for w in tokens)
    words.pop(END_TOKEN, None)
    return Vocabulary(words)


def vocabulary_from_ixtoword(ixtoword, source: str) -> Vocabulary:
    """:class:`Vocabulary` from the pickle's ``ixtoword`` (dict int -> word, or a list)."""
    if isinstance(ixtoword, dict):
        try:
            words = [ixtoword[i] for i in range(len(ixtoword))]
        except KeyError as exc:
            raise ValueError(f"{source}: ixtoword indices are not 0..{len(ixtoword) - 1} "
                             f"(missing {exc})") from None
    elif isinstance(ixtoword, list):
        words = ixtoword
    else:
        raise ValueError(f"{source}: ixtoword must be a dict or a list, got {type(ixtoword).__name__}")  # noqa: TRY004 - a ValueError: the CLIs report it as one line
    if not words or words[0] != END_TOKEN:
        raise ValueError(f"{source}: ixtoword[0] must be {END_TOKEN!r}")
    try:
        return Vocabulary(words[1:])
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def _check_id_lists(captions, name: str, source: str) -> list[list[int]]:
    if not isinstance(captions, list):
        raise ValueError(f"{source}: {name} must be a list of captions")  # noqa: TRY004 - a ValueError: the CLIs report it as one line
    for k, cap in enumerate(captions):
        if not isinstance(cap, list) or not all(isinstance(i, int) for i in cap):
            raise ValueError(f"{source}: {name}[{k}] is not a list of word ids")
    return captions


def load_captions_pickle(path: str | Path) -> tuple[list[list[int]], list[list[int]], Vocabulary]:
    """``(train_captions, test_captions, vocab)`` from ``captions.pickle``.

    The file holds ``[train_captions, test_captions, ixtoword, wordtoix]`` (captions as lists of
    word ids, ``captions_per_image`` consecutive entries per image); it is read with the restricted
    unpickler (Python 2 pickles included). ``wordtoix`` must agree with ``ixtoword``.
    """
    source = str(path)
    data = load_pickle(path)
    if not isinstance(data, (list, tuple)) or len(data) != 4:
        raise ValueError(f"{source}: expected [train_captions, test_captions, ixtoword, wordtoix]")
    train, test, ixtoword, wordtoix = data
    vocab = vocabulary_from_ixtoword(ixtoword, source)
    if isinstance(wordtoix, dict) and wordtoix and wordtoix != vocab.wordtoix:
        raise ValueError(f"{source}: wordtoix disagrees with ixtoword")
    return (_check_id_lists(train, "train_captions", source),
            _check_id_lists(test, "test_captions", source), vocab)


def save_captions_pickle(path: str | Path, train: list[list[int]], test: list[list[int]],
                         vocab: Vocabulary) -> Path:
    """Write ``captions.pickle`` as the original does (protocol 2, ixtoword/wordtoix as dicts)."""
    ixtoword = dict(enumerate(vocab.ixtoword))
    payload = [train, test, ixtoword, dict(vocab.wordtoix)]
    return atomic_write(path, lambda stream: pickle.dump(payload, stream, protocol=2))


def encode_tokens(tokens: Sequence[str], vocab: Vocabulary) -> list[int]:
    """Word ids of ``tokens``; words not in ``vocab`` are dropped (the original's behaviour)."""
    ids = (vocab.wordtoix.get(t, 0) for t in tokens)
    return [i for i in ids if i > 0]


def caption_tensor(ids: Sequence[int], words_num: int,
                   rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """The original ``get_caption``: long (words_num,) padded with 0, and its length.

    A caption longer than ``words_num`` keeps a random subset of ``words_num`` words, in order.
    """
    caps, lens = pad_captions([ids], words_num, random_drop=rng)
    return caps[0], int(lens[0])
