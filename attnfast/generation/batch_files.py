"""Batch sampling to files (``python -m attnfast.sample``, ``make demo``): PNGs or one npz, and the
paper's attention figures, written on worker threads while the next batch is generated."""
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from attnfast.data import to_uint8_images
from attnfast.engine.files import atomic_write
from attnfast.engine.progress import progress_bar
from attnfast.viz import attention_figure, save_png
from .captions import encode_captions
from .core import SeededGenerator
from .errors import GenerationError
from .loading import GeneratorModels, load_generator

LOG = logging.getLogger("attnfast")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "caption"


def sample_to_files(checkpoint, captions: list[str], out_dir, n: int = 1, batch: int = 16, seed: int = 0,
                    attention: bool = False, device: torch.device | None = None, amp: str = "off",
                    progress: bool = True, models=None, fmt: str = "png", fuse: bool = True,
                    graphs: bool = False) -> dict:
    """Images for ``captions`` (``n`` each) in batches of ``batch``; image j (caption c, copy k,
    j = c * n + k) is drawn with seed ``seed + j`` (:func:`attnfast.generation.seeded_noise`: the
    same image ``serve`` gives for that caption and seed). ``fmt`` "png" writes one PNG per image,
    "npz" one ``images.npz`` (images uint8 (N, H, W, 3), caption_ids, sample_ids, captions); writing
    happens on worker threads. ``fuse`` folds G's BatchNorms (fuse_for_inference); ``graphs``
    captures G as CUDA graphs on the GPU (attnfast.engine.graphed_generator). ``models``: a
    :class:`GeneratorModels` loaded beforehand (e.g. by load_released) instead of ``checkpoint``."""
    device = device or torch.device("cpu")
    if n < 1 or batch < 1:
        raise GenerationError(f"--n and --batch must be >= 1, got {n} and {batch}")
    if fmt not in ("png", "npz"):
        raise GenerationError(f"--format must be png or npz, got {fmt!r}")
    models = GeneratorModels(*(models or load_generator(checkpoint, device)))
    ids, lens, kept, _ = encode_captions(captions, models.vocab, models.config["dataset"]["words_num"])
    jobs = [(c, k) for c in range(len(captions)) for k in range(n)]
    core = SeededGenerator(models, device, amp=amp, fuse=fuse, graphs=graphs, max_batch=min(batch, len(jobs)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, futures = [], []
    pages = _NpzPages(len(jobs))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as writer:
        bar = progress_bar(total=len(jobs), desc="sample", unit="img", disable=not progress)
        for start in range(0, len(jobs), batch):
            chunk = jobs[start:start + batch]
            rows = torch.tensor([c for c, _ in chunk])
            drawn = core.draw(ids[rows], lens[rows], [seed + start + i for i in range(len(chunk))],
                              all_stages=attention)
            pixels = to_uint8_images(drawn.images)
            if fmt == "npz":
                pages.allocate(pixels.shape[1:])
                futures.append(writer.submit(pages.put, start, pixels))
            for (c, k), image in zip(chunk, pixels, strict=True):
                if fmt == "png":
                    path = out_dir / f"{c:04d}_{_slug(captions[c])}_{k}.png"
                    futures.append(writer.submit(save_png, image, path))
                    written.append(str(path))
                if attention and k == 0 and drawn.attention:
                    j = chunk.index((c, k))
                    count = len(kept[c])
                    figure = attention_figure([f[j] for f in drawn.stages[1:]],
                                              [a[j, :count] for a in drawn.attention], kept[c])
                    path = out_dir / f"{c:04d}_{_slug(captions[c])}_attention.png"
                    futures.append(writer.submit(save_png, figure, path))
                    written.append(str(path))
            bar.update(len(chunk))
        bar.close()
        for future in futures:
            future.result()
        if fmt == "npz":
            path = out_dir / "images.npz"
            writer.submit(pages.save, path, [captions[c] for c, _ in jobs], [c for c, _ in jobs],
                          [k for _, k in jobs]).result()
            written.append(str(path))
    elapsed = time.perf_counter() - started
    if attention and models.config["model"]["branch_num"] < 2:
        LOG.warning("attnfast.sample: a 1-stage generator has no word attention to draw")
    return {"images": len(jobs), "files": len(written), "out": str(out_dir), "seconds": elapsed,
            "images_per_s": len(jobs) / max(elapsed, 1e-9)}


class _NpzPages:
    """The images of an npz output: batches put by worker threads into one (N, H, W, 3) uint8 array."""

    def __init__(self, count: int):
        self.count, self.images = count, None

    def allocate(self, shape: tuple) -> None:
        """Called on the main thread before the first put: (count,) + shape uint8."""
        import numpy as np
        if self.images is None:
            self.images = np.zeros((self.count,) + tuple(shape), dtype=np.uint8)

    def put(self, start: int, pixels) -> None:
        self.images[start:start + len(pixels)] = pixels

    def save(self, path: Path, texts: list, caption_ids: list, sample_ids: list) -> None:
        import numpy as np
        atomic_write(path, lambda stream: np.savez(stream, images=self.images, captions=np.array(texts),
                                                    caption_ids=np.array(caption_ids),
                                                    sample_ids=np.array(sample_ids)))
