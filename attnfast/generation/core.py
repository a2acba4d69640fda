"""Drawing images: the generator on a batch of encoded captions, and batches of (caption, seed) items.

:func:`generate` (attnfast.models.text_encoding, re-exported here) is the one forward pass every front
end runs (sample, eval, the seed-paper features, serve). :class:`SeededGenerator` is the serving form: each item's noise comes from its own seed
(attnfast.generation.noise), so an item's image never depends on the items batched with it (up to float
rounding: the kernels of a batch of 1 and of 32 may sum in another order).
"""
import logging
from functools import partial
from typing import NamedTuple

import torch

from attnfast.engine.graphed_generator import GraphedGenerator
from attnfast.models.inference import fuse_for_inference
from attnfast.models.text_encoding import generate
from .captions import EncodedCaptions, encode_captions
from .interpolation import interpolation_images
from .loading import GeneratorModels
from .noise import fixed_noise, seeded_noise

LOG = logging.getLogger("attnfast")


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes a graph-captured generator is kept at: powers of two below ``max_batch``,
    and ``max_batch`` itself (a batch is padded up to the next one)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return tuple(sizes + [max_batch])


class Drawn(NamedTuple):
    """What :meth:`SeededGenerator.draw` returns, on the CPU, float32.

    stages: per generator stage kept, images (B, 3, r, r) in [-1, 1] (the last one is the output);
    attention: per attentional stage kept, maps (B, words_num, h, w) over that stage's input
    regions (empty for a one-stage generator). Only the last of each unless ``all_stages``.
    """
    stages: list[torch.Tensor]
    attention: list[torch.Tensor]

    @property
    def images(self) -> torch.Tensor:
        return self.stages[-1]

    @property
    def last_attention(self) -> torch.Tensor | None:
        return self.attention[-1] if self.attention else None


class SeededGenerator:
    """Images for batches of (caption, seed) items with one set of models.

    Args:
        models: :class:`GeneratorModels` (from load_generator / load_released).
        device: where the models are.
        amp: "off", "bf16" or "fp16" autocast of the generator.
        fuse: fold G's BatchNorms for inference (attnfast.models.inference.fuse_for_inference).
        graphs: on CUDA, one CUDA-graph-captured generator per size of :func:`batch_buckets`
            (``max_batch``), a batch padded up to the next size; elsewhere eager, said once.
        max_batch: the largest batch :meth:`draw` takes.
    Not thread-safe: one thread owns it (the server's worker).
    """

    def __init__(self, models: GeneratorModels, device: torch.device, amp: str = "off", fuse: bool = True,
                 graphs: bool = False, max_batch: int = 64):
        netG, self.text_encoder, self.vocab, self.config = models
        if fuse:
            netG = fuse_for_inference(netG)
        self.netG, self.device, self.amp = netG, device, amp
        self.words_num = self.config["dataset"]["words_num"]
        self.z_dim = self.config["model"]["z_dim"]
        self.max_batch = int(max_batch)
        self.buckets = batch_buckets(self.max_batch)
        self.graphs = bool(graphs) and device.type == "cuda"
        if graphs and not self.graphs:
            LOG.warning("attnfast: --graphs needs a CUDA device; the generator runs eagerly on %s", device)
        words_num = self.words_num
        validate = lambda c, lens: self.text_encoder._validate(c, lens, words_num)  # noqa: E731
        run = partial(self._forward, packed=not self.graphs)
        sizes = self.buckets if self.graphs else (self.max_batch,)
        self._runners = {size: GraphedGenerator(run, size, device, self.graphs, validate=validate)
                         for size in sizes}

    def encode(self, captions: list[str], warn: bool = False) -> EncodedCaptions:
        """See :func:`attnfast.generation.encode_captions`."""
        return encode_captions(captions, self.vocab, self.words_num, warn=warn)

    def _forward(self, captions, cap_lens, noise_and_eps, packed: bool):
        # one noise input (z and eps side by side) so that GraphedGenerator's 3-input contract holds
        noise, eps = noise_and_eps.split([self.z_dim, noise_and_eps.shape[1] - self.z_dim], dim=1)
        return generate(self.netG, self.text_encoder, captions, cap_lens, noise, self.words_num,
                        self.amp, eps=eps, packed=packed)

    def bucket(self, count: int) -> int:
        """The batch size ``count`` items run at (itself unless graphs pad it)."""
        if not self.graphs:
            return count
        return next(size for size in self.buckets if size >= count)

    @torch.no_grad()
    def draw(self, ids: torch.Tensor, lens: torch.Tensor, seeds: list[int], all_stages: bool = False) -> Drawn:
        """ids (B, words_num) long, lens (B,) long, B seeds (B <= max_batch) -> :class:`Drawn`, item i
        drawn with the noise of seeds[i] (:func:`seeded_noise`)."""
        count = ids.shape[0]
        if not 1 <= count <= self.max_batch or lens.shape != (count,) or len(seeds) != count:
            raise ValueError(f"draw takes 1..{self.max_batch} items with ids (B, T), lens (B,) and B seeds; "
                             f"got ids {tuple(ids.shape)}, lens {tuple(lens.shape)}, {len(seeds)} seeds")
        noise, eps = seeded_noise(seeds, self.z_dim, self.config["model"]["condition_dim"])
        runner = self._runners[self.bucket(count) if self.graphs else self.max_batch]
        fakes, att_maps = runner(ids, lens, torch.cat([noise, eps], dim=1))
        if not all_stages:
            fakes, att_maps = fakes[-1:], att_maps[-1:]
        return Drawn([f.cpu() for f in fakes], [a.cpu() for a in att_maps])

    def warm_up(self) -> None:
        """One batch at each size the server runs first (1 and max_batch; with graphs every bucket,
        which captures them), so that no request pays for the set-up."""
        for size in self.buckets if self.graphs else sorted({1, self.max_batch}):
            ids = torch.zeros(size, self.words_num, dtype=torch.long)
            ids[:, 0] = 1                                                  # one word: the vocabulary's first
            self.draw(ids, torch.ones(size, dtype=torch.long), list(range(size)))

    @torch.no_grad()
    def interpolate(self, ids: torch.Tensor, lens: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
        """GAN-INT path from caption 0 to caption 1 of ids (2, words_num) with the noise of ``seed``:
        (steps, 3, S, S) float32 on the CPU (see attnfast.generation.interpolation)."""
        noise, eps = fixed_noise(self.config, 1, seed)
        return interpolation_images(self.netG, self.text_encoder, ids, lens, self.words_num, steps,
                                    noise.to(self.device), eps.to(self.device), self.amp).cpu()
