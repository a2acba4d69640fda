"""The GAN trainer's speed options (issue 8) and how each one changes the models and optimisers.

One dataclass, set from ``python -m attnfast.train`` flags (``--graphs``, ``--compile``,
``--text-cache-mb``, ``--channels-last``, ``--sync-bn``, ``--dataset-on-device``, ``--no-batched-d``); the
defaults cache the frozen text encoder's outputs per caption (:mod:`attnfast.trainer.text_cache`), store
the shapes data's rendered images and batch each D's calls in its update (issue 27).
"""
import dataclasses
import logging
from dataclasses import dataclass

import torch

from attnfast.data.device_store import DTYPES, DeviceImageStore
from attnfast.ops.fast_autograd import nhwc_glu_kernel_available
from . import distributed
from .graphs import GraphedGANStep
from .text_cache import TextFeatureCache

LOG = logging.getLogger("attnfast")

COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
AUTO_STORE_MB = 2048.0   # the default store's budget (the demo's 20,000 images at 64 px: 235 MB as uint8)


@dataclass
class SpeedOptions:
    """graphs: capture the step as CUDA graphs (:mod:`attnfast.trainer.graphs`); graph_warmup: eager
    steps before the capture. compile: ``torch.compile`` G, every D (trunk and heads) and the image
    encoder with ``compile_backend``. text_cache_mb: memory bound of the per-caption text feature
    cache (0 = off). channels_last: store 4-D weights (G, every D, the image encoder) and real images
    NHWC; None (the default) resolves per run (:meth:`resolved`): on for bf16 autocast on the CPU
    when attnfast._C has its NHWC GLU kernel, else off. sync_bn: SyncBatchNorm across ranks (CUDA only).
    dataset_on_device_mb: memory budget of the device-resident training images (0 = off; see
    :mod:`attnfast.data.device_store`; None, the default: on when the data set can be stored and fits
    AUTO_STORE_MB, else the data loader renders as usual), dataset_dtype: their storage, "uint8" or
    "float32". batched_d: each D's update runs its trunk once on [real; fake] and its conditional
    head once on [real; fake; mismatched], BatchNorm per part (:mod:`attnfast.models.segments`): the
    original's logits up to the rounding of the batched convolutions, in two calls instead of five
    (False: the original's separate calls)."""

    graphs: bool = False
    graph_warmup: int = 3
    compile: bool = False
    compile_backend: str = "inductor"
    text_cache_mb: float = 1024.0
    channels_last: bool | None = None
    sync_bn: bool = False
    dataset_on_device_mb: float | None = None
    dataset_dtype: str = "uint8"
    batched_d: bool = True

    def __post_init__(self):
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"compile backend must be one of {COMPILE_BACKENDS}, got {self.compile_backend!r}")
        if self.text_cache_mb < 0:
            raise ValueError(f"--text-cache-mb must be >= 0, got {self.text_cache_mb}")
        if self.dataset_on_device_mb is not None and self.dataset_on_device_mb < 0:
            raise ValueError(f"--dataset-on-device must be >= 0 MB, got {self.dataset_on_device_mb}")
        if self.dataset_dtype not in DTYPES:
            raise ValueError(f"--dataset-dtype must be one of {DTYPES}, got {self.dataset_dtype!r}")
        if self.graph_warmup < 1:
            raise ValueError(f"graph warm-up must be >= 1 step, got {self.graph_warmup}")

    def channels_last_on(self, device: torch.device) -> bool:
        return bool(self.channels_last)

    def resolved(self, device: torch.device, amp: str) -> "SpeedOptions":
        """These options with ``channels_last`` None decided for ``device`` and ``amp``: on for bf16 on
        the CPU where attnfast._C has its NHWC GLU kernel (oneDNN's bf16 convolutions then run without
        a layout reorder on either side, and every BatchNorm, GLU and shuffle keeps NHWC: the demo's
        GAN step 1.075x in an in-process A/B, docs/benchmarks.md); off elsewhere (CUDA keeps its
        measured NCHW Triton path; fp32 on the CPU was not measured faster)."""
        if self.channels_last is not None:
            return self
        auto = device.type == "cpu" and amp == "bf16" and nhwc_glu_kernel_available()
        return dataclasses.replace(self, channels_last=auto)

    def images_to_device(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A batch of real images (B, 3, r, r) on ``device`` (NHWC when channels_last is on)."""
        images = images.to(device, non_blocking=True)
        if self.channels_last_on(device):
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def prepare_models(self, netG, netsD: list, image_encoder, device: torch.device,
                       dist: distributed.DistContext):
        """SyncBatchNorm, rank 0's initial weights on every rank, channels_last; returns (netG, netsD)."""
        if self.sync_bn:
            netG = distributed.convert_sync_batch_norm(netG, device)
            netsD = [distributed.convert_sync_batch_norm(d, device) for d in netsD]
        for model in [netG, *netsD]:
            distributed.broadcast_module(model, dist)
        if self.channels_last_on(device):
            for model in [netG, *netsD, image_encoder]:
                model.to(memory_format=torch.channels_last)
        return netG, netsD

    def adam(self, params, lr: float, betas: tuple, device: torch.device, amp: str = "off") -> torch.optim.Adam:
        """The original's Adam (same update rule) in its fastest form that keeps the numbers:
        capturable and fused on CUDA under ``graphs``; fused (one kernel per tensor list, which
        rounds differently from the op-by-op update: ~3e-8) under autocast (``amp`` not "off");
        else the multi-tensor ``foreach`` update, bit-identical to the per-parameter loop."""
        if self.graphs and device.type == "cuda":
            return torch.optim.Adam(params, lr=lr, betas=betas, capturable=True, fused=True)
        if amp != "off":
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)

    def compile_models(self, netG, netsD: list, image_encoder, compile_discriminators: bool = True) -> None:
        """``torch.compile`` in place (``nn.Module.compile``: the state_dict keys do not change).

        The fused ops are ``torch.library.custom_op`` with fake implementations, so the compiled
        graphs go through them without graph breaks. Compilation happens on the first step.
        ``compile_discriminators`` False (a gradient penalty: compiled graphs have no double
        backward) leaves the Ds eager, saying so once.
        """
        if not self.compile:
            return
        LOG.info("attnfast: --compile: G, %d discriminators and the image encoder compile on the first "
                 "step (backend %s)", len(netsD) if compile_discriminators else 0, self.compile_backend)
        if not compile_discriminators:
            LOG.warning("attnfast: --compile: the discriminators stay eager: the gradient penalty "
                        "(gan.gp) differentiates them twice, which compiled graphs do not support")
        modules = [netG, image_encoder]
        for netD in (netsD if compile_discriminators else []):
            modules += [netD, netD.COND_DNET] + ([netD.UNCOND_DNET] if netD.UNCOND_DNET is not None else [])
        for module in modules:
            module.compile(backend=self.compile_backend)

    def text_cache(self, text_encoder, words_num: int, batched: bool = False):
        """A :class:`~attnfast.trainer.text_cache.TextFeatureCache`, or None when text_cache_mb is 0;
        ``batched``: a batch's misses in one encoder call (the trainer's choice under autocast)."""
        if self.text_cache_mb <= 0:
            return None
        return TextFeatureCache(text_encoder, words_num, int(self.text_cache_mb * (1 << 20)), batched=batched)

    def image_store(self, dataset, device: torch.device, num_workers: int = 0, progress: bool = True):
        """The training images on ``device`` (:class:`~attnfast.data.device_store.DeviceImageStore`),
        or None when dataset_on_device_mb is 0 or they do not fit (one logged message). By default
        (None) the store is built when the data set's images are a fixed function of the index (the
        shapes data; the same batches, bit for bit) and fit AUTO_STORE_MB: rendering each image once
        instead of once per draw is the fast path on every device (issue 27)."""
        budget = self.dataset_on_device_mb
        if budget is None:
            if not DeviceImageStore.can_store(dataset):
                return None
            budget = AUTO_STORE_MB
        if budget <= 0:
            return None
        return DeviceImageStore.build(dataset, device, budget, self.dataset_dtype,
                                      num_workers=num_workers, progress=progress)

    def graphed_step(self, trainer):
        """The CUDA-graph step of ``trainer`` when ``graphs`` is on, else None."""
        if not self.graphs:
            return None
        return GraphedGANStep(trainer, warmup=self.graph_warmup)
