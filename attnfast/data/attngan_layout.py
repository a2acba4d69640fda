"""CUB birds and COCO in AttnGAN's directory layout (the metadata that AttnGAN, DM-GAN and DF-GAN
distribute, plus the images).

Birds (``data_dir`` = ``data/birds``)::

    CUB_200_2011/images/<class>/<name>.jpg, CUB_200_2011/images.txt, CUB_200_2011/bounding_boxes.txt
    text/<class>/<name>.txt          10 captions per image, one per line
    train/filenames.pickle, test/filenames.pickle   lists of keys "<class>/<name>"
    train/class_info.pickle, test/class_info.pickle (optional) class ids
    captions.pickle                  [train_captions, test_captions, ixtoword, wordtoix]

COCO (``data_dir`` = ``data/coco``): the same without ``CUB_200_2011`` (no box crop): keys such as
``COCO_train2014_000000000009``, captions in ``text/<key>.txt`` (5 used per image), images in
``images/<key>.jpg`` as the original expects, or left in the COCO download's ``train2014/`` and
``val2014/`` folders (chosen by the key's name). Without ``class_info.pickle`` every image is its
own class (the original's ``np.arange``).

Follows the original ``TextDataset``: captions from ``captions.pickle`` when present, else read from
``text/`` for both splits, the vocabulary built from both, and ``captions.pickle`` written (only when
no caption file was bad, so the file always holds ``captions_per_image`` captions per image). Pickles
are read with :mod:`attnfast.data.safe_pickle`. Deviations: the caption of an item is drawn from
its own captions (the original's ``randint(0, embeddings_num)`` could pick the next image's); the
test split uses caption 0 and a centre crop by default (deterministic evaluation; ``augment=True``
gives the original's random crop and flip); a missing or corrupt file is reported by name and
skipped (or fatal with ``strict=True``) instead of failing mid-epoch or shifting captions.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .attngan_captioned import CaptionedImages, ImageRecord
from .attngan_images import read_bounding_boxes
from .attngan_skips import BadDataError, SkipLog
from .attngan_text import (
    encode_tokens,
    load_captions_pickle,
    read_caption_file,
    save_captions_pickle,
    vocabulary_from_tokens,
)
from .safe_pickle import load_pickle
from .vocab import Vocabulary

__all__ = [
    "KINDS",
    "AttnGANDataset",
    "attngan_captions",
    "attngan_vocabulary",
    "image_path",
    "load_class_ids",
    "load_filenames",
]

log = logging.getLogger("attnfast.data")
KINDS = ("birds", "coco")
SPLITS = ("train", "test")


def _check_dir(data_dir: str | Path, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"dataset kind must be one of {KINDS}, got {kind!r}")
    if data_dir is None:
        raise ValueError(f"dataset.data_dir must be set for the {kind} dataset")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"dataset.data_dir not found: {data_dir}")
    return data_dir


def load_filenames(data_dir: str | Path, split: str) -> list[str]:
    """The keys of ``<data_dir>/<split>/filenames.pickle`` (a list of str)."""
    path = Path(data_dir) / split / "filenames.pickle"
    names = load_pickle(path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: expected a list of file names")
    return names


def load_class_ids(data_dir: str | Path, split: str, count: int) -> list[int]:
    """``<data_dir>/<split>/class_info.pickle`` (ints, one per image) or ``range(count)``."""
    path = Path(data_dir) / split / "class_info.pickle"
    if not path.is_file():
        return list(range(count))
    raw = load_pickle(path, allow_numpy=True)
    try:
        ids = [int(x) for x in (raw.tolist() if hasattr(raw, "tolist") else raw)]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: expected a list of integer class ids") from None
    if len(ids) != count:
        raise ValueError(f"{path}: {len(ids)} class ids for {count} file names")
    return ids


def image_path(data_dir: str | Path, kind: str, key: str) -> Path:
    """Where the original looks for the image of ``key`` (COCO: also train2014/ or val2014/)."""
    data_dir = Path(data_dir)
    if kind == "birds":
        return data_dir / "CUB_200_2011" / "images" / f"{key}.jpg"
    flat = data_dir / "images" / f"{key}.jpg"
    if not flat.exists():
        for folder in ("train2014", "val2014"):
            if folder in key and (data_dir / folder / f"{key}.jpg").exists():
                return data_dir / folder / f"{key}.jpg"
    return flat


def _read_split_texts(data_dir: Path, names: list[str], per_image: int, skips: SkipLog):
    """Token lists per image (None for a bad caption file, which is recorded in ``skips``)."""
    out = []
    for key in names:
        try:
            out.append(read_caption_file(data_dir / "text" / f"{key}.txt", per_image))
        except BadDataError as exc:
            skips.skip(exc)
            out.append(None)
    return out


def attngan_captions(data_dir: str | Path, kind: str, captions_per_image: int,
                     strict: bool = False) -> tuple[dict[str, list], Vocabulary, SkipLog]:
    """``({"train": [...], "test": [...]}, vocab, skips)``: per image of each split its
    ``captions_per_image`` captions as word-id lists, or None when its caption file is bad.

    Read from ``captions.pickle`` when present (its caption count must be
    ``len(filenames) * captions_per_image``); else from ``text/`` and then saved there.
    """
    data_dir = _check_dir(data_dir, kind)
    names = {split: load_filenames(data_dir, split) for split in SPLITS}
    skips = SkipLog(strict, str(data_dir))
    pickle_path = data_dir / "captions.pickle"
    per = int(captions_per_image)
    if pickle_path.is_file():
        train, test, vocab = load_captions_pickle(pickle_path)
        out = {}
        for split, flat in zip(SPLITS, (train, test), strict=True):
            if len(flat) != len(names[split]) * per:
                raise ValueError(f"{pickle_path}: {len(flat)} {split} captions for "
                                 f"{len(names[split])} images x {per} captions per image "
                                 f"(is dataset.captions_per_image right?)")
            out[split] = [flat[k * per:(k + 1) * per] for k in range(len(names[split]))]
        return out, vocab, skips
    texts = {split: _read_split_texts(data_dir, names[split], per, skips) for split in SPLITS}
    vocab = vocabulary_from_tokens(tokens for split in SPLITS for caps in texts[split]
                                   if caps is not None for tokens in caps)
    out = {split: [None if caps is None else [encode_tokens(t, vocab) for t in caps]
                   for caps in texts[split]] for split in SPLITS}
    if len(skips):
        skips.report("caption files")
        log.warning("%s: not written, because some caption files are bad", pickle_path)
    else:
        try:
            save_captions_pickle(pickle_path, *([c for part in out[s] for c in part] for s in SPLITS), vocab)
            log.info("wrote %s (%d words)", pickle_path, len(vocab))
        except OSError as exc:
            log.warning("could not write %s (%s); the vocabulary is rebuilt each time", pickle_path, exc)
    return out, vocab, skips


def attngan_vocabulary(data_dir: str | Path, kind: str, captions_per_image: int,
                       strict: bool = False) -> Vocabulary:
    """The data set's vocabulary (from ``captions.pickle``, else built from ``text/`` and saved)."""
    return attngan_captions(data_dir, kind, captions_per_image, strict)[1]


class AttnGANDataset(CaptionedImages):
    """CUB (``kind="birds"``) or COCO (``kind="coco"``) in AttnGAN's layout.

    Args:
        data_dir: ``data/birds`` or ``data/coco`` (see the module docstring).
        kind: "birds" (1.5x bounding-box crop) or "coco".
        split: "train" or "test".
        multi_res: image sides, ascending (64, 128, 256 by branch_num; 299 for DAMSM).
        words_num: caption tensor length (cfg.TEXT.WORDS_NUM).
        captions_per_image: 10 for birds, 5 for COCO (cfg.TEXT.CAPTIONS_PER_IMAGE).
        vocab: encode captions with this vocabulary (e.g. a DAMSM checkpoint's) instead of the data
            set's; words it lacks are dropped (counted in a log line).
        strict: a missing or corrupt image or caption file raises :class:`BadDataError` instead of
            being skipped with a count logged once.
        seed, caption_index, augment: see :class:`CaptionedImages`.

    Items: see :class:`CaptionedImages`; ``key`` is the file name key.
    """

    def __init__(self, data_dir: str | Path, kind: str, split: str = "train",
                 multi_res: tuple[int, ...] = (64,), words_num: int = 18,
                 captions_per_image: int = 10, vocab: Vocabulary | None = None,
                 strict: bool = False, seed: int = 0, caption_index: int | None = None,
                 augment: bool | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        data_dir = _check_dir(data_dir, kind)
        captions, data_vocab, skips = attngan_captions(data_dir, kind, captions_per_image, strict)
        skips = SkipLog(strict, f"{data_dir} ({split})")  # count this split's items only
        names = load_filenames(data_dir, split)
        class_ids = load_class_ids(data_dir, split, len(names))
        boxes = read_bounding_boxes(data_dir / "CUB_200_2011") if kind == "birds" else None
        remap = vocab is not None and vocab != data_vocab
        dropped = 0
        records = []
        for key, caps, class_id in zip(names, captions[split], class_ids, strict=True):
            path = image_path(data_dir, kind, key)
            if caps is None:
                skips.skip(BadDataError(f"caption file bad: {data_dir / 'text' / key}.txt"))
                continue
            bad = [k for k, c in enumerate(caps) if not c or min(c) < 1 or max(c) >= len(data_vocab)]
            if bad:
                skips.skip(BadDataError(f"caption {bad[0]} of {key} is empty or has bad word ids "
                                        f"(captions.pickle or {key}.txt)"))
                continue
            if remap:
                words = [data_vocab.decode(c).split() for c in caps]
                caps = [encode_tokens(w, vocab) for w in words]
                dropped += sum(len(w) - len(c) for w, c in zip(words, caps, strict=True))
                if not all(caps):
                    skips.skip(BadDataError(f"a caption of {key} has no word of the given vocabulary"))
                    continue
            if not path.is_file():
                skips.skip(BadDataError(f"image missing: {path}"))
                continue
            bbox = None
            if boxes is not None:
                if key not in boxes:
                    skips.skip(BadDataError(f"no bounding box for {key} in "
                                            f"{data_dir / 'CUB_200_2011' / 'bounding_boxes.txt'}"))
                    continue
                bbox = boxes[key]
            records.append(ImageRecord(key, path, caps, class_id, bbox))
        skips.report("images")
        if dropped:
            log.warning("%s (%s): %d caption words are not in the given vocabulary and were dropped",
                        data_dir, split, dropped)
        self.data_dir, self.kind = data_dir, kind
        super().__init__(records, vocab if vocab is not None else data_vocab, split, multi_res,
                         words_num, seed, caption_index, augment, skips)
