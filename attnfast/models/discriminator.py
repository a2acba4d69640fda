"""AttnGAN's discriminators (``D_NET64/128/256`` and their blocks in the original code/model.py).

Each D maps an image to a (B, ndf*8, 4, 4) code; ``UNCOND_DNET`` / ``COND_DNET`` turn a code
(and, for the conditional one, the sentence embedding) into one score per image. Their BatchNorms
are :class:`~attnfast.models.segments.SegmentBatchNorm2d` (``nn.BatchNorm2d`` unless the trainer
runs several batches through one call, see :func:`~attnfast.models.segments.batch_segments`).
"""
import torch
from torch import nn

from attnfast.ops import conv3x3, heads
from attnfast.ops.fast_autograd import as_memory_format
from . import _checks as check
from .segments import SegmentBatchNorm2d


def Block3x3_leakRelu(in_planes: int, out_planes: int) -> nn.Sequential:  # noqa: N802
    """conv3x3 -> BN -> LeakyReLU(0.2): (B, in_planes, H, W) -> (B, out_planes, H, W)."""
    return nn.Sequential(conv3x3(in_planes, out_planes), SegmentBatchNorm2d(out_planes),
                         nn.LeakyReLU(0.2, inplace=True))


def downBlock(in_planes: int, out_planes: int) -> nn.Sequential:  # noqa: N802
    """4x4 stride-2 conv -> BN -> LeakyReLU(0.2): (B, in_planes, H, W) -> (B, out_planes, H/2, W/2)."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False),
                         SegmentBatchNorm2d(out_planes), nn.LeakyReLU(0.2, inplace=True))


def encode_image_by_16times(ndf: int) -> nn.Sequential:
    """(B, 3, S, S) -> (B, ndf*8, S/16, S/16): four stride-2 convs, BN on all but the first."""
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False),                           # (B, ndf, S/2, S/2)
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),                     # (B, 2ndf, S/4, S/4)
        SegmentBatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),                 # (B, 4ndf, S/8, S/8)
        SegmentBatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),                 # (B, 8ndf, S/16, S/16)
        SegmentBatchNorm2d(ndf * 8),
        nn.LeakyReLU(0.2, inplace=True))


class D_GET_LOGITS(nn.Module):  # noqa: N801 - the original's name
    """Score head: (B, ndf*8, 4, 4) [+ sentence (B, nef)] -> (B,).

    Returns sigmoid probabilities as the original by default; ``logits=True`` returns the
    pre-sigmoid scores for ``binary_cross_entropy_with_logits`` (see reference/gan_losses.py).
    ``projection`` (conditional head only; not in AttnGAN): adds the projection discriminator's
    term <W c, sum_hw h> to the logit (Miyato & Koyama, "cGANs with Projection Discriminator",
    ICLR 2018), a direct inner product of the sentence with the image code.
    """

    def __init__(self, ndf: int, nef: int, bcondition: bool = False, projection: bool = False):
        super().__init__()
        self.df_dim = ndf
        self.ef_dim = nef
        self.bcondition = bcondition
        if bcondition:
            self.jointConv = Block3x3_leakRelu(ndf * 8 + nef, ndf * 8)
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())
        self.projection = nn.Linear(nef, ndf * 8, bias=False) if (projection and bcondition) else None

    def forward(self, h_code, c_code=None, logits: bool = False):
        """h_code (B, ndf*8, 4, 4), c_code (B, nef) or None -> (B,) probabilities or logits."""
        check.tensor("h_code", h_code, 4, f"(B, ndf*8={self.df_dim * 8}, 4, 4)", floating=True)
        check.size("h_code", h_code, 1, self.df_dim * 8, f"(B, {self.df_dim * 8}, 4, 4)", "ndf*8")
        sentence = c_code
        # under autocast (bf16 rounding already) the same math in cheaper forms (ops.heads, issue 27)
        cheap = torch.is_autocast_enabled(h_code.device.type) and tuple(h_code.shape[2:]) == (4, 4)
        if self.bcondition and c_code is not None:
            check.tensor("c_code", c_code, 2, f"(B, nef={self.ef_dim})", floating=True)
            check.size("c_code", c_code, 1, self.ef_dim, f"(B, {self.ef_dim})", "nef")
            if cheap:
                joint = heads.joint_conv3x3(h_code, c_code, self.jointConv[0].weight)   # (B, ndf*8, 4, 4)
                h_c_code = self.jointConv[2](self.jointConv[1](joint))
            else:
                c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 4, 4)  # (B, nef, 4, 4)
                h_c_code = torch.cat((h_code, c_code), 1)                 # (B, ndf*8 + nef, 4, 4)
                h_c_code = self.jointConv(h_c_code)                       # (B, ndf*8, 4, 4)
        else:
            h_c_code = h_code
        conv = self.outlogits[0]
        out = (heads.logits_full_kernel(h_c_code, conv.weight, conv.bias) if cheap
               else conv(h_c_code))                                       # (B, 1, 1, 1)
        if self.projection is not None and sentence is not None:
            projected = (self.projection(sentence) * h_code.sum(dim=(2, 3))).sum(dim=1)   # (B,)
            out = out + projected.view(-1, 1, 1, 1)
        if not logits:
            out = self.outlogits[1](out)
        return out.view(-1)                                               # (B,)


class _DNet(nn.Module):
    """Shared heads of the per-resolution discriminators."""

    resolution = 0

    def _heads(self, ndf: int, nef: int, b_jcu: bool):
        self.ndf, self.nef = ndf, nef
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True)

    @staticmethod
    def _code(h_code):
        """The trunk's (B, ndf*8, 4, 4) code for the heads, NCHW (a channels_last trunk's gradient
        goes back NHWC: see attnfast.ops.fast_autograd.as_memory_format)."""
        return as_memory_format(h_code, torch.contiguous_format)

    def _image(self, x_var):
        size = self.resolution
        check.tensor("x_var", x_var, 4, f"(B, 3, {size}, {size})", floating=True)
        if tuple(x_var.shape[1:]) != (3, size, size):
            raise ValueError(f"x_var must have shape (B, 3, {size}, {size}) for "
                             f"{type(self).__name__}, got {check.describe(x_var)}")
        return x_var


class D_NET32(_DNet):  # noqa: N801 - not in the original: the first stage of base_size=32
    """32x32 images -> (B, ndf*8, 4, 4): three stride-2 convs, then a 3x3 block to ndf*8."""

    resolution = 32

    def __init__(self, ndf: int = 64, nef: int = 256, b_jcu: bool = True):
        super().__init__()
        self.img_code_s8 = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False),                       # (B, ndf, 16, 16)
            nn.LeakyReLU(0.2, inplace=True),
            downBlock(ndf, ndf * 2),                                      # (B, 2ndf, 8, 8)
            downBlock(ndf * 2, ndf * 4))                                  # (B, 4ndf, 4, 4)
        self.img_code_s8_1 = Block3x3_leakRelu(ndf * 4, ndf * 8)
        self._heads(ndf, nef, b_jcu)

    def forward(self, x_var):
        return self._code(self.img_code_s8_1(self.img_code_s8(self._image(x_var))))  # (B, 8ndf, 4, 4)


class D_NET64(_DNet):  # noqa: N801 - the original's name
    """64x64 images -> (B, ndf*8, 4, 4)."""

    resolution = 64

    def __init__(self, ndf: int = 64, nef: int = 256, b_jcu: bool = True):
        super().__init__()
        self.img_code_s16 = encode_image_by_16times(ndf)
        self._heads(ndf, nef, b_jcu)

    def forward(self, x_var):
        return self._code(self.img_code_s16(self._image(x_var)))         # (B, 8ndf, 4, 4)


class D_NET128(_DNet):  # noqa: N801 - the original's name
    """128x128 images -> (B, ndf*8, 4, 4)."""

    resolution = 128

    def __init__(self, ndf: int = 64, nef: int = 256, b_jcu: bool = True):
        super().__init__()
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s32_1 = Block3x3_leakRelu(ndf * 16, ndf * 8)
        self._heads(ndf, nef, b_jcu)

    def forward(self, x_var):
        x_code8 = self.img_code_s16(self._image(x_var))                  # (B, 8ndf, 8, 8)
        x_code4 = self.img_code_s32(x_code8)                              # (B, 16ndf, 4, 4)
        return self._code(self.img_code_s32_1(x_code4))                   # (B, 8ndf, 4, 4)


class D_NET256(_DNet):  # noqa: N801 - the original's name
    """256x256 images -> (B, ndf*8, 4, 4)."""

    resolution = 256

    def __init__(self, ndf: int = 64, nef: int = 256, b_jcu: bool = True):
        super().__init__()
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s64 = downBlock(ndf * 16, ndf * 32)
        self.img_code_s64_1 = Block3x3_leakRelu(ndf * 32, ndf * 16)
        self.img_code_s64_2 = Block3x3_leakRelu(ndf * 16, ndf * 8)
        self._heads(ndf, nef, b_jcu)

    def forward(self, x_var):
        x_code16 = self.img_code_s16(self._image(x_var))                 # (B, 8ndf, 16, 16)
        x_code8 = self.img_code_s32(x_code16)                             # (B, 16ndf, 8, 8)
        x_code4 = self.img_code_s64(x_code8)                              # (B, 32ndf, 4, 4)
        x_code4 = self.img_code_s64_1(x_code4)                            # (B, 16ndf, 4, 4)
        return self._code(self.img_code_s64_2(x_code4))                   # (B, 8ndf, 4, 4)


D_NETS = {32: D_NET32, 64: D_NET64, 128: D_NET128, 256: D_NET256}


def D_NET(resolution: int, ndf: int = 64, nef: int = 256, b_jcu: bool = True,  # noqa: N802
          projection: bool = False) -> _DNet:
    """The discriminator for ``resolution`` (64, 128 or 256 as the original; 32 for base_size=32);
    ``projection`` adds the projection term to its conditional head (see D_GET_LOGITS)."""
    if resolution not in D_NETS:
        raise ValueError(f"resolution must be one of {sorted(D_NETS)}, got {resolution}")
    netD = D_NETS[resolution](ndf, nef, b_jcu)
    if projection:
        netD.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True, projection=True)
    return netD
