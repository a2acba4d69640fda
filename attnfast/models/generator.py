"""AttnGAN's generator (``G_NET`` and its stages in the original code/model.py, DESIGN.md §4).

Sizes come in as arguments (defaults: the birds config, GF_DIM 32, EMBEDDING_DIM 256,
CONDITION_DIM 100, Z_DIM 100, R_NUM 2, BRANCH_NUM 3); names match the original so its
checkpoints load.
"""
import torch
from torch import nn

from attnfast.ops import GLU, GlobalAttentionGeneral, ResBlock, conv3x3, upBlock
from attnfast.ops.fast_autograd import as_memory_format, memory_format_of
from . import _checks as check
from .conditioning import CA_NET


class INIT_STAGE_G(nn.Module):  # noqa: N801 - the original's name
    """[c_code, z] -> (B, ngf/2**upsamples, 4*2**upsamples, 4*2**upsamples). ``ngf`` here is G_NET's
    ngf*16 (512 for birds); the original has 4 upsamplings (64x64 out); 3 give a 32x32 first stage
    (``G_NET(base_size=32)``, a non-original option for small CPU runs)."""

    def __init__(self, ngf: int, ncf: int, z_dim: int = 100, upsamples: int = 4):
        super().__init__()
        if upsamples not in (3, 4):
            raise ValueError(f"INIT_STAGE_G upsamples must be 3 (32x32) or 4 (64x64), got {upsamples}")
        if ngf % 2 ** upsamples:
            raise ValueError(f"INIT_STAGE_G needs ngf divisible by {2 ** upsamples}, got {ngf}")
        self.gf_dim = ngf
        self.in_dim = z_dim + ncf
        self.upsamples = upsamples
        nz = self.in_dim
        self.fc = nn.Sequential(
            nn.Linear(nz, ngf * 4 * 4 * 2, bias=False),
            nn.BatchNorm1d(ngf * 4 * 4 * 2),
            GLU())
        for i in range(1, upsamples + 1):
            setattr(self, f"upsample{i}", upBlock(ngf // 2 ** (i - 1), ngf // 2 ** i))

    def forward(self, z_code, c_code):
        """z_code (B, z_dim), c_code (B, ncf) -> (B, ngf/16, 64, 64) (or (B, ngf/8, 32, 32))."""
        c_z_code = torch.cat((c_code, z_code), 1)                         # (B, ncf + z_dim)
        out_code = self.fc(c_z_code)                                      # (B, ngf*16)
        out_code = out_code.view(-1, self.gf_dim, 4, 4)                   # (B, ngf, 4, 4)
        for i in range(1, self.upsamples + 1):                            # 8, 16, 32(, 64)
            out_code = getattr(self, f"upsample{i}")(out_code)
        return out_code


class NEXT_STAGE_G(nn.Module):  # noqa: N801 - the original's name
    """Attention over words, residual blocks, 2x upsampling: (B, ngf, H, W) -> (B, ngf, 2H, 2W)."""

    def __init__(self, ngf: int, nef: int, ncf: int, r_num: int = 2, mask_mode: str = "correct"):
        super().__init__()
        self.gf_dim = ngf
        self.ef_dim = nef
        self.cf_dim = ncf
        self.num_residual = r_num
        self.att = GlobalAttentionGeneral(ngf, nef, mask_mode=mask_mode)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
        self.upsample = upBlock(ngf * 2, ngf)

    def forward(self, h_code, c_code, word_embs, mask):
        """h_code (B, ngf, H, W), c_code (B, ncf) (unused, as the original), word_embs (B, nef, T),
        mask (B, T) bool (True = padding) or None -> out_code (B, ngf, 2H, 2W), att (B, T, H, W)."""
        self.att.applyMask(mask)
        # the attention op works on NCHW; with channels_last weights the stage around it runs NHWC
        fmt = memory_format_of(h_code)
        c_code, att = self.att(as_memory_format(h_code, torch.contiguous_format), word_embs)
        h_c_code = torch.cat((h_code, as_memory_format(c_code, fmt)), 1)  # (B, 2*ngf, H, W)
        out_code = self.residual(h_c_code)
        out_code = self.upsample(out_code)                                # (B, ngf, 2H, 2W)
        return out_code, att


class GET_IMAGE_G(nn.Module):  # noqa: N801 - the original's name
    """(B, ngf, H, W) -> (B, 3, H, W) image in [-1, 1]."""

    def __init__(self, ngf: int):
        super().__init__()
        self.gf_dim = ngf
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code):
        return self.img(h_code)                                           # (B, 3, H, W)


class G_NET(nn.Module):  # noqa: N801 - the original's name
    """The AttnGAN generator: CA, stage 1 at 64x64, attentional stages at 128 and 256.

    Args:
        ngf: GF_DIM. nef: EMBEDDING_DIM. ncf: CONDITION_DIM. z_dim: Z_DIM. branch_num: number of
        stages (1-3). r_num: residual blocks per attentional stage. mask_mode: "correct" or
        "attngan" (the original's misaligned word mask, for released checkpoints).
        base_size: side of the first stage, 64 (the original) or 32 (stages 32, 64, 128: one
        upsampling fewer in stage 1, which starts from ngf*8 channels; for small CPU runs).
    """

    def __init__(self, ngf: int = 32, nef: int = 256, ncf: int = 100, z_dim: int = 100,
                 branch_num: int = 3, r_num: int = 2, mask_mode: str = "correct", base_size: int = 64):
        super().__init__()
        if not 1 <= branch_num <= 3:
            raise ValueError(f"branch_num must be 1, 2 or 3, got {branch_num}")
        if base_size not in (32, 64):
            raise ValueError(f"base_size must be 32 or 64, got {base_size}")
        self.ngf, self.nef, self.ncf, self.z_dim = ngf, nef, ncf, z_dim
        self.branch_num = branch_num
        self.base_size = base_size
        self.ca_net = CA_NET(nef, ncf)
        upsamples = 4 if base_size == 64 else 3
        self.h_net1 = INIT_STAGE_G(ngf * 2 ** upsamples, ncf, z_dim, upsamples)
        self.img_net1 = GET_IMAGE_G(ngf)
        if branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(ngf, nef, ncf, r_num, mask_mode)
            self.img_net2 = GET_IMAGE_G(ngf)
        if branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(ngf, nef, ncf, r_num, mask_mode)
            self.img_net3 = GET_IMAGE_G(ngf)

    def _validate(self, z_code, sent_emb, word_embs, mask):
        check.tensor("z_code", z_code, 2, f"(B, z_dim={self.z_dim})", floating=True)
        check.size("z_code", z_code, 1, self.z_dim, f"(B, {self.z_dim})", "z_dim")
        check.tensor("sent_emb", sent_emb, 2, f"(B, nef={self.nef})", floating=True)
        check.size("sent_emb", sent_emb, 0, z_code.shape[0], f"(B, {self.nef})", "B of z_code")
        if self.branch_num > 1:
            check.tensor("word_embs", word_embs, 3, f"(B, nef={self.nef}, T)", floating=True)
            check.size("word_embs", word_embs, 0, z_code.shape[0], f"(B, {self.nef}, T)", "B of z_code")

    def forward(self, z_code, sent_emb, word_embs, mask, eps: torch.Tensor | None = None):
        """z_code (B, z_dim), sent_emb (B, nef), word_embs (B, nef, T), mask (B, T) bool
        (True = padding) or None; ``eps`` (B, ncf) fixes the CA noise.

        Returns fake_imgs [(B, 3, 64, 64), (B, 3, 128, 128), (B, 3, 256, 256)][:branch_num],
        att_maps [(B, T, 64, 64), (B, T, 128, 128)][:branch_num - 1], mu (B, ncf), logvar (B, ncf)
        (sides halved with base_size=32).
        """
        self._validate(z_code, sent_emb, word_embs, mask)
        fake_imgs, att_maps = [], []
        c_code, mu, logvar = self.ca_net(sent_emb, eps)                   # (B, ncf) each
        h_code = self.h_net1(z_code, c_code)                              # (B, ngf, base, base)
        fake_imgs.append(self.img_net1(h_code))
        for stage in range(2, self.branch_num + 1):
            h_code, att = getattr(self, f"h_net{stage}")(h_code, c_code, word_embs, mask)  # 2x size
            fake_imgs.append(getattr(self, f"img_net{stage}")(h_code))
            if att is not None:
                att_maps.append(att)
        return fake_imgs, att_maps, mu, logvar
