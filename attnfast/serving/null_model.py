"""A generator that costs nothing, for measuring the serving stack alone (``python -m attnfast.serve
--null-model SIZE``, ``bench/serve_bench.py --null-model``).

:class:`NullGenerator` answers every call the server makes of an
:class:`attnfast.generation.SeededGenerator` (encode, draw, interpolate, bucket, warm_up and the
facts /v1/health reports) with fixed images of the model's size: a bank of rendered shapes scenes
with a fixed pixel noise (so that PNG/JPEG encoding costs what it costs on a generator's textured
output, not on flat colours), image ``seed % BANK`` for each seed. Captions are encoded for real with
the shapes vocabulary, so unknown words and caption errors behave as with a shapes model.
"""
import numpy as np
import torch

from attnfast.data.shapes import render_scene, sample_scene, shapes_vocabulary
from attnfast.generation.captions import EncodedCaptions, encode_captions
from attnfast.generation.core import Drawn

BANK = 32               # distinct images served (image of seed s: bank[s % BANK])
NOISE_LEVELS = 8.0      # std of the fixed pixel noise, in 8-bit levels
WORDS_NUM = 18          # the shapes configs' dataset.words_num


def _bank(size: int, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` rendered shapes scenes at ``size`` with fixed noise: (count, 3, size, size) float32
    in [-1, 1]."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        pixels = render_scene(sample_scene(rng, resolution=size)).astype(np.float32)
        pixels += rng.normal(0.0, NOISE_LEVELS, pixels.shape).astype(np.float32)
        images.append(np.clip(pixels, 0, 255).transpose(2, 0, 1) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(images)).float()


class NullGenerator:
    """Args:
        size: the side of the images served (the model's output size, e.g. 64 or 128; >= 8).
        max_batch: the largest batch :meth:`draw` takes (the server's --max-batch).
    Attention maps are fixed too: (words_num, size/2, size/2) per image, as a two-stage model's last
    attentional stage. Safe to call from one thread (the server's worker), like the real one.
    """

    graphs = False
    amp = "off"
    device = torch.device("cpu")

    def __init__(self, size: int, max_batch: int = 64):
        if size < 8:
            raise ValueError(f"--null-model takes an image size >= 8, got {size}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.size, self.max_batch = int(size), int(max_batch)
        self.vocab = shapes_vocabulary()
        self.words_num = WORDS_NUM
        self.config = {"model": {"branch_num": 2, "null_model": True}, "dataset": {"words_num": WORDS_NUM}}
        self.images = _bank(self.size, BANK)
        grid = torch.linspace(0, 1, self.size // 2)
        ramp = (grid[:, None] + grid[None, :]) / 2                          # (h, w)
        self.attention = torch.stack([ramp.roll(t, dims=1) for t in range(WORDS_NUM)])  # (T, h, w)

    def encode(self, captions: list[str], warn: bool = False) -> EncodedCaptions:
        """See :func:`attnfast.generation.encode_captions` (shapes vocabulary)."""
        return encode_captions(captions, self.vocab, self.words_num, warn=warn)

    def bucket(self, count: int) -> int:
        return count

    def draw(self, ids: torch.Tensor, lens: torch.Tensor, seeds: list[int], all_stages: bool = False) -> Drawn:
        """ids (B, words_num), lens (B,), B seeds -> :class:`Drawn` with bank images (B, 3, S, S)
        and the fixed attention (B, words_num, S/2, S/2); no model runs."""
        count = ids.shape[0]
        if not 1 <= count <= self.max_batch or lens.shape != (count,) or len(seeds) != count:
            raise ValueError(f"draw takes 1..{self.max_batch} items with ids (B, T), lens (B,) and B seeds; "
                             f"got ids {tuple(ids.shape)}, lens {tuple(lens.shape)}, {len(seeds)} seeds")
        index = torch.tensor([seed % BANK for seed in seeds])
        return Drawn([self.images[index]], [self.attention.expand(count, -1, -1, -1)])

    def warm_up(self) -> None:
        """Nothing to warm: kept for the server's start-up sequence."""

    def interpolate(self, ids: torch.Tensor, lens: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
        """(steps, 3, S, S): a linear blend from bank image ``seed`` to the next one."""
        a, b = self.images[seed % BANK], self.images[(seed + 1) % BANK]
        beta = torch.linspace(0, 1, steps)[:, None, None, None]
        return (1 - beta) * a + beta * b
