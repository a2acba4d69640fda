"""The style encoder S of GAN-INT-CLS (Reed et al. 2016, Sec. 4.4): an inverse of the generator,
image -> the noise z that drew it, so that z = S(image) keeps the image's style (pose, layout,
background) while the caption given to G sets the content."""
import torch
import torch.nn.functional as F
from torch import nn

from . import _checks as check
from .discriminator import encode_image_by_16times


class StyleEncoder(nn.Module):
    """(B, 3, H, W) images in [-1, 1] -> (B, z_dim) predicted noise.

    The image is resized to ``input_size`` (area resampling when shrinking, bilinear otherwise),
    encoded by the discriminator's trunk (four stride-2 convs, :func:`encode_image_by_16times`)
    to (B, 8*ndf, input_size/16, input_size/16) and mapped by a linear layer to z_dim.

    Args:
        z_dim: size of G's noise. ndf: width of the first conv. input_size: a multiple of 16.
    """

    def __init__(self, z_dim: int = 100, ndf: int = 64, input_size: int = 64):
        super().__init__()
        if input_size < 16 or input_size % 16:
            raise ValueError(f"input_size must be a positive multiple of 16, got {input_size}")
        self.z_dim, self.ndf, self.input_size = z_dim, ndf, input_size
        self.trunk = encode_image_by_16times(ndf)
        side = input_size // 16
        self.fc = nn.Linear(ndf * 8 * side * side, z_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check.tensor("images", images, 4, "(B, 3, H, W)", floating=True)
        check.size("images", images, 1, 3, "(B, 3, H, W)", "RGB")
        size = (self.input_size, self.input_size)
        if tuple(images.shape[-2:]) != size:
            shrink = images.shape[-1] > self.input_size
            images = F.interpolate(images, size=size, mode="area" if shrink else "bilinear",
                                   **({} if shrink else {"align_corners": False}))
        code = self.trunk(images)                                          # (B, 8ndf, s, s)
        return self.fc(code.flatten(1))                                    # (B, z_dim)
