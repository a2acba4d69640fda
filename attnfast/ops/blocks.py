"""Residual and upsampling blocks (DESIGN.md §3.3): drop-ins with the original structure and
parameter names, dispatching to a backend per call."""
import torch
from torch import nn

from attnfast import reference
from attnfast.reference.blocks import BatchNormParams
from . import _validate as check
from ._dispatch import OpBackends, triton_usable

UP_BLOCK = OpBackends("upBlock")
UP_BLOCK.register("reference", lambda: reference.up_block)
RES_BLOCK = OpBackends("ResBlock")
RES_BLOCK.register("reference", lambda: reference.res_block)


def _load_triton_up():
    from attnfast.kernels.blocks import up_block_triton
    return up_block_triton


def _load_triton_res():
    from attnfast.kernels.blocks import res_block_triton
    return res_block_triton


UP_BLOCK.register("triton", _load_triton_up, triton_usable)
RES_BLOCK.register("triton", _load_triton_res, triton_usable)


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    """The original ``conv3x3``: 3x3, stride 1, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, bias: bool = False) -> nn.Conv2d:
    """The original ``conv1x1``."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=bias)


def _features(name: str, x, channels: int) -> torch.Tensor:
    check.tensor(name, x, ndim=4, expected=f"(B, {channels}, H, W)")
    check.dim_equals(name, x, 1, channels, f"(B, {channels}, H, W)", "the block's input channels")
    return x


class GLU(nn.Module):
    """Drop-in for AttnGAN's ``GLU``: x[:, :C] * sigmoid(x[:, C:]) for x (B, 2C, ...)."""

    def forward(self, x):
        if not torch.is_tensor(x) or x.dim() < 2:
            raise ValueError("GLU expects a tensor (B, 2C, ...)")
        return reference.glu(x)


class upBlock(nn.Sequential):  # noqa: N801 - the original's name
    """Drop-in for the original ``upBlock(in_planes, out_planes)``: nearest 2x -> conv3x3 ->
    BatchNorm -> GLU, (B, in_planes, H, W) -> (B, out_planes, 2H, 2W).

    Same ``nn.Sequential`` structure, hence the same state_dict keys (``1.weight``, ``2.*``).
    """

    def __init__(self, in_planes: int, out_planes: int, backend: str | None = None):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"),
                         conv3x3(in_planes, out_planes * 2),
                         nn.BatchNorm2d(out_planes * 2),
                         GLU())
        self.backend = backend

    def forward(self, x):
        conv, bn = self[1], self[2]
        x = _features("x", x, conv.in_channels)
        _, impl = UP_BLOCK.pick(self.backend, x.device)
        return impl(x, conv.weight, BatchNormParams.of(bn))


class ResBlock(nn.Module):
    """Drop-in for the original ``ResBlock(channel_num)``: conv3x3 -> BN -> GLU -> conv3x3 -> BN,
    plus the input; (B, C, H, W) -> (B, C, H, W). Keys ``block.0.weight``, ``block.1.*``,
    ``block.3.weight``, ``block.4.*`` as the original."""

    def __init__(self, channel_num: int, backend: str | None = None):
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channel_num, channel_num * 2),
            nn.BatchNorm2d(channel_num * 2),
            GLU(),
            conv3x3(channel_num, channel_num),
            nn.BatchNorm2d(channel_num))
        self.backend = backend

    def forward(self, x):
        x = _features("x", x, self.block[0].in_channels)
        _, impl = RES_BLOCK.pick(self.backend, x.device)
        return impl(x, self.block[0].weight, BatchNormParams.of(self.block[1]),
                    self.block[3].weight, BatchNormParams.of(self.block[4]))
