"""A folder of images with captions: the common format of others' data sets.

Layout: images anywhere under the folder, with captions either in ``captions.jsonl`` (one JSON
object per line: ``{"image": "rel/path.jpg", "caption": "..."}`` or ``{"image": ...,
"captions": ["...", ...]}``; several lines may name the same image, their captions add up) or, when
there is no ``captions.jsonl``, in a ``.txt`` next to each image with the same stem (one caption per
line). If the folder has ``train/`` and ``test/`` subfolders, each is a split; otherwise both splits
read the whole folder.

Captions are tokenised as AttnGAN's (lowercase ``\\w+``, non-ASCII dropped); the vocabulary is built
from the training split's captions in first-seen order (:func:`folder_vocabulary`); the trainers
save it in their checkpoints (``vocab.to_dict()``). Every image is its own class (as COCO in
AttnGAN). Images get AttnGAN's transform (see :mod:`attnfast.data.attngan_images`). A missing or
unreadable image, a bad JSONL line or an image without captions is reported by name and skipped
with a count logged once, or raises :class:`BadDataError` with ``strict=True``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .attngan_captioned import CaptionedImages, ImageRecord
from .attngan_skips import BadDataError, SkipLog
from .attngan_text import caption_tokens, encode_tokens, vocabulary_from_tokens
from .vocab import Vocabulary

__all__ = [
    "IMAGE_SUFFIXES",
    "CaptionFolderDataset",
    "folder_split_root",
    "folder_vocabulary",
    "read_folder_captions",
]

log = logging.getLogger("attnfast.data")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
JSONL_NAME = "captions.jsonl"


def folder_split_root(root: str | Path, split: str) -> Path:
    """``root/<split>`` when ``root`` has ``train/`` and ``test/``-style splits, else ``root``."""
    if root is None:
        raise ValueError("dataset.data_dir must be set for the folder dataset")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.data_dir not found: {root}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if (root / "train").is_dir():
        if not (root / split).is_dir():
            raise FileNotFoundError(f"{root} has a train/ folder but no {split}/ folder")
        return root / split
    return root


def _jsonl_entries(path: Path, skips: SkipLog) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            skips.skip(BadDataError(f"{where}: not JSON ({exc.msg})"))
            continue
        image = obj.get("image") if isinstance(obj, dict) else None
        caps = obj.get("captions", [obj["caption"]] if "caption" in obj else None) \
            if isinstance(obj, dict) else None
        if not isinstance(image, str) or not isinstance(caps, list) \
                or not all(isinstance(c, str) for c in caps):
            skips.skip(BadDataError(f'{where}: need {{"image": str, "caption": str}} or '
                                    f'{{"image": str, "captions": [str, ...]}}'))
            continue
        entries.setdefault(image, []).extend(caps)
    return entries


def _txt_entries(folder: Path, skips: SkipLog) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for image in images:
        text = image.with_suffix(".txt")
        rel = image.relative_to(folder).as_posix()
        try:
            entries[rel] = text.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            skips.skip(BadDataError(f"caption file missing: {text}"))
        except (OSError, UnicodeDecodeError) as exc:
            skips.skip(BadDataError(f"caption file unreadable: {text} ({exc})"))
    return entries


def read_folder_captions(folder: str | Path, skips: SkipLog) -> list[tuple[str, Path, list[list[str]]]]:
    """``[(relative image path, image path, token lists), ...]`` of the images with captions
    (``captions.jsonl`` if present, else per-image ``.txt``); bad entries go to ``skips``."""
    folder = Path(folder)
    jsonl = folder / JSONL_NAME
    entries = _jsonl_entries(jsonl, skips) if jsonl.is_file() else _txt_entries(folder, skips)
    if not entries and not len(skips):
        raise FileNotFoundError(f"{folder}: no {JSONL_NAME} and no images with .txt captions")
    out = []
    for rel, texts in entries.items():
        tokens = [t for t in (caption_tokens(c) for c in texts) if t]
        path = folder / rel
        if not tokens:
            skips.skip(BadDataError(f"no captions with words for {path}"))
        elif not path.is_file():
            skips.skip(BadDataError(f"image missing: {path}"))
        else:
            out.append((rel, path, tokens))
    return out


def folder_vocabulary(root: str | Path, strict: bool = False) -> Vocabulary:
    """The vocabulary of the training split's captions (first-seen order, ``<end>`` at 0)."""
    folder = folder_split_root(root, "train")
    items = read_folder_captions(folder, SkipLog(strict, str(folder)))
    return vocabulary_from_tokens(t for _, _, caps in items for t in caps)


class CaptionFolderDataset(CaptionedImages):
    """Images and captions of a folder (see the module docstring).

    Args:
        root: the folder (``dataset.data_dir``).
        split: "train" or "test" (the ``train/``/``test/`` subfolders, or the whole folder).
        multi_res, words_num, seed, caption_index, augment: see :class:`CaptionedImages`.
        vocab: the vocabulary to encode with (default: :func:`folder_vocabulary`); words it lacks
            are dropped with a count logged.
        strict: bad files raise :class:`BadDataError` instead of being skipped.
    """

    def __init__(self, root: str | Path, split: str = "train", multi_res: tuple[int, ...] = (64,),
                 words_num: int = 18, vocab: Vocabulary | None = None, strict: bool = False,
                 seed: int = 0, caption_index: int | None = None, augment: bool | None = None):
        folder = folder_split_root(root, split)
        vocab = folder_vocabulary(root, strict) if vocab is None else vocab
        skips = SkipLog(strict, str(folder))
        records, dropped = [], 0
        for index, (rel, path, token_lists) in enumerate(read_folder_captions(folder, skips)):
            caps = [encode_tokens(t, vocab) for t in token_lists]
            dropped += sum(len(t) - len(c) for t, c in zip(token_lists, caps, strict=True))
            caps = [c for c in caps if c]
            if not caps:
                skips.skip(BadDataError(f"no caption of {path} has a word of the vocabulary"))
                continue
            records.append(ImageRecord(rel, path, caps, index))
        skips.report("images")
        if dropped:
            log.warning("%s: %d caption words are not in the vocabulary and were dropped", folder, dropped)
        self.root = Path(root)
        super().__init__(records, vocab, split, multi_res, words_num, seed, caption_index, augment, skips)
