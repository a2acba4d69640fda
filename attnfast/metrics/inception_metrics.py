"""Inception Score and FID through torchmetrics, with Inception-v3 weights from a local file.

Weights (nothing is downloaded; a missing file is an error naming the file expected):
- ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release; torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth`` is the same network): TensorFlow's 2015-12-05
  Inception graph ported to PyTorch, 1008 classes, with the TF graph's pooling quirks (average
  pools that exclude the padding, a max pool in Mixed_7c). This is the network of the original
  FID code (TTUR) and of OpenAI's IS code, hence the one that gives paper-comparable numbers:
  FID on its 2048-d pool features, IS on softmax of its 1008 logits *without* the fc bias (the
  OpenAI code multiplies pool3 by the ``softmax/logits/MatMul`` weight only).
- ``inception_v3_google-0cc3c7bd.pth`` (torchvision's ImageNet weights, 1000 classes): usable,
  but its numbers are not comparable with published ones (different weights and pooling).
The variant is recognised from the fc layer (1008 vs 1000 rows) or passed as ``variant=``.

CUB's published IS (AttnGAN 4.36) used StackGAN's Inception fine-tuned on CUB (TensorFlow), not an
ImageNet network: a PyTorch port of it with torchvision's key names (fc of 50 rows) can be loaded
with ``variant="torchvision"`` (and its own class count), but is not shipped or converted here.

Input contract (a BGR or range mistake is a known cause of irreproducible IS): the extractor
takes uint8 RGB images (B, 3, H, W) in 0..255 and nothing else. :func:`to_uint8_rgb` converts
float images with an *explicit* range ((0, 1) or (-1, 1), the generator's tanh output) and refuses
floats whose values do not fit the range it is told or, with no range given, anything outside
[0, 1]; ``channel_order="BGR"`` (OpenCV-read images) flips the channels. Images are resized to
299x299 bilinearly (``align_corners=False``, torch's, not TensorFlow's resize: expect differences
in the second decimal against TF numbers), then scaled as each network expects: (x - 128) / 128 for
the FID network (the TF graph's own Sub/Mul), x / 127.5 - 1 for torchvision's.

torchmetrics (pure Python) computes the statistics: the network runs once per batch and its pool
features / logits feed ``FrechetInceptionDistance`` and ``InceptionScore`` through pass-through
feature modules, so IS and FID of the same images share one forward pass. Neither torchvision nor
torch-fidelity is needed (the CPU torch build has no torchvision); without torchmetrics the metrics
raise :class:`MetricUnavailable` saying so.
"""
from __future__ import annotations

import math
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from attnfast.models.inception import IGNORED_PREFIXES, Inception3, InceptionA, InceptionC, InceptionE
from attnfast.models.released import load_state_strict, read_state_dict

__all__ = [
    "FID_WEIGHTS",
    "TORCHVISION_WEIGHTS",
    "VARIANTS",
    "InceptionFeatures",
    "InceptionMetrics",
    "MetricUnavailable",
    "load_inception_features",
    "to_uint8_rgb",
]

FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
TORCHVISION_WEIGHTS = "inception_v3_google-0cc3c7bd.pth"
VARIANTS = {"fid": 1008, "torchvision": 1000}  # variant -> classes of its ImageNet fc
INPUT_SIZE = 299
_EXPECTED = (f"{FID_WEIGHTS} (pytorch-fid's FID Inception weights: paper-comparable IS/FID) or "
             f"{TORCHVISION_WEIGHTS} (torchvision's ImageNet weights)")


class MetricUnavailable(RuntimeError):
    """A metric's dependency (torchmetrics) is not importable."""


def _torchmetrics():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
    except ImportError as exc:
        raise MetricUnavailable(
            f"IS and FID need the package 'torchmetrics', which is not importable here ({exc}): "
            f"pip install 'attnfast[metrics]' (or pip install torchmetrics; torchvision and "
            f"torch-fidelity are not needed)") from exc
    return FrechetInceptionDistance, InceptionScore


# ------------------------------------------------------------------ the FID network's blocks
def _avg_pool_tf(x):
    """TensorFlow's 3x3 average pool: the zero padding is not counted."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x):
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _FIDInceptionA(InceptionA):
    """InceptionA with TF's average pool (same parameters as torchvision's)."""

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool_tf(x))], 1)


class _FIDInceptionC(InceptionC):
    """InceptionC with TF's average pool."""

    def forward(self, x):
        dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            dbl = layer(dbl)
        return torch.cat([self.branch1x1(x),
                          self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))), dbl,
                          self.branch_pool(_avg_pool_tf(x))], 1)


class _FIDInceptionE(InceptionE):
    """InceptionE with TF's average pool (Mixed_7b) or a 3x3 max pool (Mixed_7c, the graph's)."""

    def __init__(self, in_channels: int, pool):
        super().__init__(in_channels)
        self.pool = pool

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
                          self.branch_pool(self.pool(x))], 1)


def build_inception(variant: str, num_classes: int | None = None) -> Inception3:
    """Inception-v3 (random weights, torchvision's key names) for ``variant`` "fid" (TF graph's
    pooling, 1008 classes) or "torchvision" (1000 classes); ``num_classes`` overrides the count."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
    net = Inception3(num_classes=num_classes or VARIANTS[variant], include_fc=True, init_weights=False)
    if variant == "fid":
        for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
            setattr(net, name, _FIDInceptionA(cin, pool))
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            setattr(net, name, _FIDInceptionC(768, c7))
        net.Mixed_7b = _FIDInceptionE(1280, _avg_pool_tf)
        net.Mixed_7c = _FIDInceptionE(2048, _max_pool_same)
    return net


# ------------------------------------------------------------------ feature extractor
class InceptionFeatures(nn.Module):
    """uint8 RGB images (B, 3, H, W) in 0..255 -> {"pool": (B, 2048) float32 pool features,
    "logits": (B, num_classes) float32 logits for IS (without the fc bias for the FID network, as
    OpenAI's IS code; with it for torchvision's)}. Always in eval mode."""

    def __init__(self, net: Inception3, variant: str):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
        if net.fc is None:
            raise ValueError("net must have its fc layer (the IS logits)")
        self.fc = net.fc                                                  # pool (2048) -> logits
        net.fc = None                                                     # net: images -> pool
        self.net = net.eval()
        self.variant = variant
        self.num_features = 2048
        self.num_classes = self.fc.out_features

    def train(self, mode: bool = True):
        return super().train(False)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4 \
                or images.shape[1] != 3:
            got = (f"dtype {images.dtype}, shape {tuple(images.shape)}" if torch.is_tensor(images)
                   else type(images).__name__)
            raise ValueError(f"images must be uint8 RGB (B, 3, H, W) in 0..255 (convert with "
                             f"attnfast.metrics.inception_metrics.to_uint8_rgb), got {got}")
        x = images.to(next(self.net.parameters()).device, torch.float32)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                              align_corners=False)                        # (B, 3, 299, 299)
        return (x - 128.0) / 128.0 if self.variant == "fid" else x / 127.5 - 1.0

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pool = self.net(self._prepare(images)).float()                    # (B, 2048)
        bias = self.fc.bias.float() if self.variant == "torchvision" else None
        logits = F.linear(pool, self.fc.weight.float(), bias)             # (B, K)
        return {"pool": pool, "logits": logits}


def load_inception_features(weights_path, variant: str = "auto", device=None) -> InceptionFeatures:
    """:class:`InceptionFeatures` with the weights of a local file (see the module docstring).

    ``variant`` "auto" picks "fid" for a 1008-class fc, else "torchvision" (any class count, so a
    fine-tuned network in torchvision's key layout loads too). ``AuxLogits.*`` keys are ignored.

    Raises:
        FileNotFoundError: ``weights_path`` is None or no file, naming the files expected.
        ValueError: the file does not match the network (keys and shapes named).
    """
    if weights_path is None:
        raise FileNotFoundError(f"IS/FID need Inception-v3 weights from a local file "
                                f"(--inception-weights PATH): {_EXPECTED}; nothing is downloaded")
    path = os.fspath(weights_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Inception-v3 weights file not found: {path!r}; expected "
                                f"{_EXPECTED}, downloaded beforehand (nothing is downloaded here)")
    state = read_state_dict(path, "Inception-v3 state dict")
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    if "fc.weight" not in state:
        raise ValueError(f"{path!r} has no 'fc.weight': not an Inception-v3 classifier checkpoint "
                         f"(expected {_EXPECTED})")
    classes = int(state["fc.weight"].shape[0])
    if variant == "auto":
        variant = "fid" if classes == VARIANTS["fid"] else "torchvision"
    net = load_state_strict(build_inception(variant, classes), state, f"Inception-v3 weights {path!r}")
    return InceptionFeatures(net, variant).to(device or "cpu")


# ------------------------------------------------------------------ input conversion
def to_uint8_rgb(images: torch.Tensor, value_range: tuple[float, float] | None = None,
                 channel_order: str = "RGB") -> torch.Tensor:
    """Images (B, 3, H, W) -> uint8 RGB (B, 3, H, W) in 0..255, for :class:`InceptionFeatures`.

    uint8 input is taken as 0..255. Float input needs its range: ``value_range`` (lo, hi), e.g.
    (-1, 1) for generator output or (0, 1); values outside it (beyond 1e-3) are an error. Without
    ``value_range`` floats must lie in [0, 1]: a negative value (a [-1, 1] image) or one above 1
    (a 0..255 float image) raises instead of being guessed. ``channel_order="BGR"`` flips the
    channels (images read with OpenCV); "RGB" (Pillow, attnfast's generators) keeps them.
    """
    if not torch.is_tensor(images) or images.dim() != 4:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if images.shape[1] != 3:
        hint = " (channels-last? permute(0, 3, 1, 2))" if images.shape[-1] == 3 else ""
        raise ValueError(f"images must have 3 channels at dim 1 (B, 3, H, W), got shape "
                         f"{tuple(images.shape)}{hint}")
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    if images.dtype == torch.uint8:
        out = images
    elif images.is_floating_point():
        low, high = float(images.min()), float(images.max())
        if value_range is None:
            if low < 0 or high > 1:
                guess = "[-1, 1] (generator output)" if low < 0 else "0..255"
                raise ValueError(f"float images must be in [0, 1] unless value_range is given; got "
                                 f"values in [{low:.3g}, {high:.3g}], which looks like {guess}: "
                                 f"pass value_range explicitly")
            value_range = (0.0, 1.0)
        lo, hi = map(float, value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        tol = 1e-3 * (hi - lo)
        if low < lo - tol or high > hi + tol:
            raise ValueError(f"images have values in [{low:.3g}, {high:.3g}], outside "
                             f"value_range={tuple(value_range)}")
        out = ((images.float() - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8)
    else:
        raise ValueError(f"images must be uint8 or floating, got dtype {images.dtype}")
    return out.flip(1) if channel_order == "BGR" else out


# ------------------------------------------------------------------ the metrics
class _Given(nn.Module):
    """torchmetrics' ``feature`` module for features computed beforehand: the identity on
    (B, num_features) float tensors."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class InceptionMetrics:
    """IS of the generated images and FID between generated and real ones, streamed by batch.

    Args:
        extractor: :class:`InceptionFeatures` (or any module mapping uint8 RGB (B, 3, H, W) to
            {"pool": (B, F), "logits": (B, K)}, e.g. a small stand-in in tests).
        inception_score, fid: which metrics to compute.
        splits: IS splits (10, as the IS code of the papers).
    Call :meth:`update` with image batches (``real=True`` for the reference set, FID only), then
    :meth:`compute`.
    """

    def __init__(self, extractor: nn.Module, *, inception_score: bool = True, fid: bool = True,
                 splits: int = 10):
        if not (inception_score or fid):
            raise ValueError("nothing to compute: inception_score and fid are both False")
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}")
        fid_cls, is_cls = _torchmetrics()
        self.extractor = extractor.eval()
        self.splits = splits
        param = next(extractor.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        self.is_metric = self.fid_metric = None
        if inception_score:
            with warnings.catch_warnings():  # IS keeps every logit row by design (K floats per image)
                warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
                self.is_metric = is_cls(feature=_Given(getattr(extractor, "num_classes", 0)),
                                        splits=splits).to(device)
        if fid:
            self.fid_metric = fid_cls(feature=_Given(getattr(extractor, "num_features", 2048))).to(device)
        self.counts = {"fake": 0, "real": 0}

    @torch.no_grad()
    def update(self, images: torch.Tensor, *, real: bool = False, value_range=None,
               channel_order: str = "RGB") -> None:
        """Add a batch (see :func:`to_uint8_rgb` for the accepted images): generated images go to
        IS and FID's fake side, ``real=True`` images to FID's real side only."""
        if real and self.fid_metric is None:
            raise ValueError("real images are only used by FID, which is not being computed")
        features = self.extractor(to_uint8_rgb(images, value_range, channel_order))
        if self.fid_metric is not None:
            self.fid_metric.update(features["pool"].double(), real=real)
        if not real and self.is_metric is not None:
            self.is_metric.update(features["logits"].float())
        self.counts["real" if real else "fake"] += images.shape[0]

    def compute(self, seed: int = 0) -> dict:
        """{"inception_score": {"mean", "std", "std_population", "splits", "images"},
        "fid": {"value", "images", "real_images"}} for the metrics asked. IS splits are drawn by
        torchmetrics from a random permutation, seeded with ``seed``; "std" is torchmetrics'
        (N - 1), "std_population" numpy's default (what the papers' "±" used)."""
        out = {}
        if self.is_metric is not None:
            if self.counts["fake"] < self.splits:
                raise ValueError(f"IS with {self.splits} splits needs at least {self.splits} "
                                 f"generated images, got {self.counts['fake']}")
            groups = len(torch.arange(self.counts["fake"]).chunk(self.splits))
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="std\\(\\): degrees of freedom")  # 1 split
                torch.manual_seed(seed)
                mean, std = self.is_metric.compute()
            std = float(std) if groups > 1 else 0.0
            out["inception_score"] = {
                "mean": float(mean), "std": std, "std_population": std * math.sqrt((groups - 1) / groups),
                "splits": groups, "images": self.counts["fake"]}
        if self.fid_metric is not None:
            if min(self.counts.values()) < 2:
                raise ValueError(f"FID needs at least 2 generated and 2 real images, got "
                                 f"{self.counts['fake']} and {self.counts['real']}")
            out["fid"] = {"value": float(self.fid_metric.compute()), "images": self.counts["fake"],
                          "real_images": self.counts["real"]}
        return out
