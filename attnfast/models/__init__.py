"""AttnGAN's models with the original module and parameter names (sizes passed in, no global cfg):
text encoder, image encoders, conditioning augmentation, generator stages, discriminators."""
from .conditioning import CA_NET, KL_loss
from .discriminator import (D_GET_LOGITS, D_NET, D_NET32, D_NET64, D_NET128, D_NET256, Block3x3_leakRelu,
                            downBlock, encode_image_by_16times)
from .generator import G_NET, GET_IMAGE_G, INIT_STAGE_G, NEXT_STAGE_G
from .image_encoder import CNN_ENCODER, SmallImageEncoder, image_encoder
from .inception import Inception3, inception_v3_features, load_inception_weights
from .init import weights_init
from .text_encoder import RNN_ENCODER
from .style_encoder import StyleEncoder
from .vlmgan import MatchingScoreBlock
from .released import (ReleasedWeightsError, load_released_generator, load_released_image_encoder,
                       load_released_text_encoder)

from .inference import fuse_for_inference

__all__ = [
    "RNN_ENCODER", "CNN_ENCODER", "SmallImageEncoder", "image_encoder", "Inception3",
    "inception_v3_features", "load_inception_weights", "CA_NET", "KL_loss", "INIT_STAGE_G",
    "NEXT_STAGE_G", "GET_IMAGE_G", "G_NET", "Block3x3_leakRelu", "downBlock",
    "encode_image_by_16times", "D_GET_LOGITS", "D_NET32", "D_NET64", "D_NET128", "D_NET256", "D_NET",
    "weights_init", "fuse_for_inference", "ReleasedWeightsError", "load_released_generator",
    "load_released_text_encoder", "load_released_image_encoder", "StyleEncoder", "MatchingScoreBlock",
]
