"""The item logic shared by the real-image datasets (AttnGAN's CUB/COCO layout, caption folders):
a list of records (image file, captions as word ids, class id, optional box) turned into items with
the same keys as :class:`attnfast.data.ShapesDataset`'s, so ``collate_shapes`` batches them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .attngan_images import bbox_crop_box, load_rgb, stage_images
from .attngan_skips import BadDataError, SkipLog
from .attngan_text import caption_tensor
from .vocab import Vocabulary

__all__ = ["CaptionedImages", "ImageRecord"]

_SPLIT_IDS = {"train": 0, "test": 1}


@dataclass
class ImageRecord:
    """One image: ``key`` (its name in the data set), ``path``, ``captions`` (lists of word ids,
    each non-empty), ``class_id`` (DAMSM same-class masking), ``bbox`` (x, y, w, h) or None."""
    key: str
    path: Path
    captions: list[list[int]]
    class_id: int
    bbox: tuple[int, int, int, int] | None = None


class CaptionedImages(Dataset):
    """Items from :class:`ImageRecord` s.

    Args:
        records: the usable images (checked for presence by the subclass).
        vocab: the vocabulary the captions' ids refer to.
        split: "train" (random caption, crop and flip per item and epoch, see :meth:`set_epoch`) or
            "test" (caption 0, centre crop, no flip, unless ``augment=True``).
        multi_res: image sides returned, ascending (64, 128, 256 for a 3-stage generator).
        words_num: caption tensor length; longer captions keep a random subset of words in order
            (seeded per item, so reproducible).
        seed: item ``i`` draws from ``default_rng([seed, i, split_id, epoch])``.
        caption_index: if set, always this caption (clipped to the item's caption count).
        augment: random crop + flip (default: train split only).
        skips: the :class:`SkipLog` for files found corrupt while loading (strict -> raise).

    ``dataset[i]`` is a dict: ``images`` list of float32 (3, r, r) in [-1, 1]; ``caption`` long
    (words_num,) padded with 0; ``cap_len`` int; ``caption_text`` str; ``caption_index`` int;
    ``class_id`` int; ``index`` int; ``key`` str. A file found corrupt at load time is reported by
    name and (non-strict) replaced by the next usable item.
    """

    def __init__(self, records: list[ImageRecord], vocab: Vocabulary, split: str,
                 multi_res: tuple[int, ...], words_num: int, seed: int = 0,
                 caption_index: int | None = None, augment: bool | None = None,
                 skips: SkipLog | None = None):
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {tuple(_SPLIT_IDS)}, got {split!r}")
        multi_res = tuple(int(r) for r in multi_res)
        if not multi_res or list(multi_res) != sorted(set(multi_res)) or multi_res[0] < 8:
            raise ValueError(f"multi_res must be distinct ascending sides >= 8, got {multi_res}")
        if words_num < 1 or seed < 0:
            raise ValueError("words_num must be >= 1 and seed >= 0")
        if not records:
            raise ValueError(f"no usable images in the {split} split")
        self.records = records
        self.vocab = vocab
        self.split = split
        self.split_id = _SPLIT_IDS[split]
        self.multi_res = multi_res
        self.resolution = multi_res[-1]
        self.words_num = int(words_num)
        self.seed = int(seed)
        self.caption_index = caption_index
        self.augment = split == "train" if augment is None else bool(augment)
        self.skips = skips or SkipLog(False, type(self).__name__)
        self.bad: set[int] = set()
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Choose the random captions, crops and flips of ``epoch`` (train split)."""
        self.epoch = int(epoch)

    def all_captions(self, i: int) -> list[str]:
        """Every caption of item ``i`` as text (words of the vocabulary, space-separated)."""
        return [self.vocab.decode(ids) for ids in self.records[i].captions]

    def load_images(self, i: int, rng: np.random.Generator | None) -> list[torch.Tensor]:
        """The stage images of item ``i`` (raises :class:`BadDataError` naming a bad file)."""
        record = self.records[i]
        img = load_rgb(record.path)
        if record.bbox is not None:
            img = img.crop(bbox_crop_box(record.bbox, *img.size))
        return stage_images(img, self.multi_res, rng if self.augment else None)

    def _item(self, i: int) -> dict:
        record = self.records[i]
        epoch = self.epoch if self.split == "train" else 0
        rng = np.random.default_rng([self.seed, i, self.split_id, epoch])
        images = self.load_images(i, rng)
        count = len(record.captions)
        if self.caption_index is not None:
            ci = min(int(self.caption_index), count - 1)
        elif self.split == "train":
            ci = int(rng.integers(count))
        else:
            ci = 0
        caption, cap_len = caption_tensor(record.captions[ci], self.words_num, rng)
        return {
            "images": images,
            "caption": caption,
            "cap_len": cap_len,
            "caption_text": self.vocab.decode(caption[:cap_len]),
            "caption_index": ci,
            "class_id": int(record.class_id),
            "index": i,
            "key": record.key,
        }

    def __getitem__(self, i: int) -> dict:
        n = len(self.records)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        for step in range(n):
            j = (i + step) % n
            if j in self.bad:
                continue
            try:
                return self._item(j)
            except BadDataError as exc:
                self.skips.skip(exc)  # raises in strict mode
                self.bad.add(j)
                self.skips.report("images")
        raise BadDataError(f"every image of the {self.split} split is missing or corrupt")
