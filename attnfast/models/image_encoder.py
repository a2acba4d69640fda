"""DAMSM image encoders: the original Inception-v3 based ``CNN_ENCODER`` and a small conv encoder
for the shapes dataset. Both map images (B, 3, H, W) in [-1, 1] to region features
(B, nef, h, w) and a global code (B, nef)."""
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from attnfast.ops import conv1x1
from . import _checks as check
from .inception import inception_v3_features

BACKBONE = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
            "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
            "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _images(x) -> torch.Tensor:
    check.tensor("x", x, 4, "(B, 3, H, W) images in [-1, 1]", floating=True)
    check.size("x", x, 1, 3, "(B, 3, H, W)", "RGB channels")
    return x


class CNN_ENCODER(nn.Module):  # noqa: N801 - the original's name
    """AttnGAN's DAMSM image encoder: Inception-v3 up to Mixed_6e for 17x17 region features, up to
    Mixed_7c and an 8x8 average pool for the global code.

    Same attribute and parameter names as the original (the Inception blocks, ``emb_features``,
    ``emb_cnn_code``). The backbone has requires_grad=False when ``freeze_backbone``; as in the
    original that is all freezing does: in ``train()`` mode its BatchNorm layers still use batch
    statistics (call ``.eval()`` for fixed features).

    The input is bilinearly resized to 299x299 with ``align_corners`` (default False, today's
    ``nn.Upsample`` default). The original ran on torch 0.3, whose bilinear ``nn.Upsample`` behaved
    as align_corners=True: pass True to reproduce its released checkpoints exactly. As in the
    original, the [-1, 1] images go into Inception without ImageNet normalisation.

    Args:
        nef: embedding size (256). weights_path: local torchvision Inception-v3 checkpoint (None =
        random backbone, with a warning).
    """

    def __init__(self, nef: int = 256, weights_path=None, freeze_backbone: bool = True,
                 align_corners: bool = False):
        super().__init__()
        self.nef = nef
        self.align_corners = align_corners
        model = inception_v3_features(weights_path)
        if freeze_backbone:
            for param in model.parameters():
                param.requires_grad = False
        for name in BACKBONE:
            setattr(self, name, getattr(model, name))
        self.emb_features = conv1x1(768, nef)
        self.emb_cnn_code = nn.Linear(2048, nef)
        self.init_trainable_weights()

    def init_trainable_weights(self):
        """Projection weights uniform in [-0.1, 0.1] (the Linear bias keeps PyTorch's init)."""
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)

    def forward(self, x):
        """x (B, 3, H, W) float in [-1, 1] -> features (B, nef, 17, 17), cnn_code (B, nef)."""
        x = _images(x)
        x = F.interpolate(x, size=(299, 299), mode="bilinear",
                          align_corners=self.align_corners)              # (B, 3, 299, 299)
        x = self.Conv2d_1a_3x3(x)                                         # (B, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)                                         # (B, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)                                         # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                      # (B, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)                                         # (B, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)                                         # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                      # (B, 192, 35, 35)
        x = self.Mixed_5b(x)                                              # (B, 256, 35, 35)
        x = self.Mixed_5c(x)                                              # (B, 288, 35, 35)
        x = self.Mixed_5d(x)
        x = self.Mixed_6a(x)                                              # (B, 768, 17, 17)
        x = self.Mixed_6b(x)
        x = self.Mixed_6c(x)
        x = self.Mixed_6d(x)
        x = self.Mixed_6e(x)
        features = x                                                      # image regions
        x = self.Mixed_7a(x)                                              # (B, 1280, 8, 8)
        x = self.Mixed_7b(x)                                              # (B, 2048, 8, 8)
        x = self.Mixed_7c(x)
        x = F.avg_pool2d(x, kernel_size=8)                                # (B, 2048, 1, 1)
        x = x.view(x.size(0), -1)                                         # (B, 2048)
        cnn_code = self.emb_cnn_code(x)                                   # (B, nef)
        features = self.emb_features(features)                            # (B, nef, 17, 17)
        return features, cnn_code


def _down(in_channels: int, out_channels: int, norm: bool = True) -> nn.Sequential:
    """Stride-2 4x4 conv [-> BN] -> LeakyReLU(0.2): (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""
    layers = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class SmallImageEncoder(nn.Module):
    """A small conv image encoder with ``CNN_ENCODER``'s contract, for the shapes dataset (trains
    in minutes on a CPU).

    The image is resized to ``input_size`` (bilinear), then log2(input_size / regions) stride-2
    convs give a ``regions`` x ``regions`` grid; ``emb_features`` (1x1 conv) projects it to nef.
    A further stride-2 conv, a global average pool and ``emb_cnn_code`` (Linear) give the code.

    Args:
        nef: embedding size. ndf: channels of the first conv (doubling, capped at 8*ndf).
        regions: side of the region grid. input_size: side the input is resized to; input_size /
        regions must be a power of two >= 2.
    """

    def __init__(self, nef: int = 256, ndf: int = 64, regions: int = 8, input_size: int = 64):
        super().__init__()
        steps = math.log2(input_size / regions) if regions > 0 and input_size > 0 else -1
        if steps < 1 or steps != int(steps):
            raise ValueError(f"input_size / regions must be a power of two >= 2, got "
                             f"input_size={input_size}, regions={regions}")
        self.nef = nef
        self.regions = regions
        self.input_size = input_size
        widths = [min(ndf * 2 ** i, ndf * 8) for i in range(int(steps))]
        blocks = [_down(3, widths[0], norm=False)]
        blocks += [_down(cin, cout) for cin, cout in itertools.pairwise(widths)]
        self.trunk = nn.Sequential(*blocks)
        self.head = _down(widths[-1], min(widths[-1] * 2, ndf * 8))
        self.emb_features = conv1x1(widths[-1], nef)
        self.emb_cnn_code = nn.Linear(self.head[0].out_channels, nef)

    def forward(self, x):
        """x (B, 3, H, W) float in [-1, 1] -> features (B, nef, regions, regions), code (B, nef)."""
        x = _images(x)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)                        # (B, 3, S, S)
        regions = self.trunk(x)                                           # (B, C, r, r)
        code = self.head(regions).mean(dim=(2, 3))                        # (B, C')
        return self.emb_features(regions), self.emb_cnn_code(code)       # (B, nef, r, r), (B, nef)


def image_encoder(kind: str = "inception", nef: int = 256, **kwargs) -> nn.Module:
    """``kind="inception"`` -> :class:`CNN_ENCODER` (kwargs: weights_path, freeze_backbone,
    align_corners); ``kind="small"`` -> :class:`SmallImageEncoder` (kwargs: ndf, regions,
    input_size)."""
    if kind == "inception":
        return CNN_ENCODER(nef, **kwargs)
    if kind == "small":
        return SmallImageEncoder(nef, **kwargs)
    raise ValueError(f"kind must be 'inception' or 'small', got {kind!r}")
