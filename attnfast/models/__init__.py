"""AttnGAN's models with the original module and parameter names (sizes passed in, no global cfg):
text encoder, image encoders, conditioning augmentation, generator stages, discriminators."""
from .conditioning import CA_NET, KL_loss
from .discriminator import (
    D_GET_LOGITS,
    D_NET,
    D_NET32,
    D_NET64,
    D_NET128,
    D_NET256,
    Block3x3_leakRelu,
    downBlock,
    encode_image_by_16times,
)
from .generator import G_NET, GET_IMAGE_G, INIT_STAGE_G, NEXT_STAGE_G
from .image_encoder import CNN_ENCODER, SmallImageEncoder, image_encoder
from .inception import Inception3, inception_v3_features, load_inception_weights
from .inference import fuse_for_inference
from .init import weights_init
from .released import (
    ReleasedWeightsError,
    load_released_generator,
    load_released_image_encoder,
    load_released_text_encoder,
)
from .style_encoder import StyleEncoder
from .text_encoder import RNN_ENCODER
from .vlmgan import MatchingScoreBlock

__all__ = [
                            "CA_NET",
                            "CNN_ENCODER",
                            "D_GET_LOGITS",
                            "D_NET",
                            "D_NET32",
                            "D_NET64",
                            "D_NET128",
                            "D_NET256",
                            "GET_IMAGE_G",
                            "G_NET",
                            "INIT_STAGE_G",
                            "NEXT_STAGE_G",
                            "RNN_ENCODER",
                            "Block3x3_leakRelu",
                            "Inception3",
                            "KL_loss",
                            "MatchingScoreBlock",
                            "ReleasedWeightsError",
                            "SmallImageEncoder",
                            "StyleEncoder",
                            "downBlock",
                            "encode_image_by_16times",
                            "fuse_for_inference",
                            "image_encoder",
                            "inception_v3_features",
                            "load_inception_weights",
                            "load_released_generator",
                            "load_released_image_encoder",
                            "load_released_text_encoder",
                            "weights_init",
]
