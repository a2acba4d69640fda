"""The models behind generation: an attnfast GAN checkpoint, or the original AttnGAN's released weights."""
import torch

from attnfast.data.attngan_text import load_captions_pickle
from attnfast.models.build import GeneratorModels, load_generator
from attnfast.models.released import load_released_generator, load_released_text_encoder
from .errors import GenerationError

__all__ = ["GeneratorModels", "add_model_arguments", "load_generator", "load_released", "models_from_args"]


def load_released(netG_path, text_encoder_path, vocab_path, device: torch.device, words_num: int = 25,
                  mask_mode: str = "attngan") -> GeneratorModels:
    """The original AttnGAN's released weights as :func:`load_generator` returns a checkpoint: the
    generator (``netG_*.pth``), the DAMSM text encoder (``text_encoder*.pth``), the vocabulary of
    the data set's ``captions.pickle`` and a config with words_num / z_dim / branch_num."""
    if not text_encoder_path or not vocab_path:
        raise GenerationError("--netG needs --text-encoder PATH and --vocab captions.pickle")
    netG = load_released_generator(netG_path, mask_mode=mask_mode)
    text_encoder = load_released_text_encoder(text_encoder_path, words_num=words_num)
    vocab = load_captions_pickle(vocab_path)[2]
    if len(vocab) != text_encoder.ntoken:
        raise GenerationError(f"{vocab_path} has {len(vocab)} words but {text_encoder_path} was trained "
                              f"with {text_encoder.ntoken}: not the data set of these weights")
    config = {"dataset": {"words_num": words_num},
              "model": {"z_dim": netG.z_dim, "condition_dim": netG.ncf, "branch_num": netG.branch_num}}
    return GeneratorModels(netG.to(device), text_encoder.to(device), vocab, config)


def add_model_arguments(parser):
    """The model options of every command that draws images (argparse): ``--checkpoint`` or
    ``--netG`` with ``--text-encoder``, ``--vocab``, ``--words-num`` and ``--mask-mode``. Returns the
    required, mutually exclusive group of the model's source (a command may add one of its own)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a GAN checkpoint (gan.pt)")
    source.add_argument("--netG", metavar="PATH", help="the original AttnGAN's released generator "
                        "(netG_*.pth; with --text-encoder and --vocab)")
    parser.add_argument("--text-encoder", metavar="PATH", help="released text_encoder*.pth (--netG)")
    parser.add_argument("--vocab", metavar="PICKLE", help="the data set's captions.pickle (--netG)")
    parser.add_argument("--words-num", type=int, default=25, help="WORDS_NUM for --netG (25: the "
                        "original's eval_bird.yml; eval_coco.yml: 20)")
    parser.add_argument("--mask-mode", choices=("attngan", "correct"), default="attngan",
                        help="word mask of released generators (attngan: as they were trained)")
    return source


def models_from_args(args, device: torch.device) -> GeneratorModels:
    """The models named by :func:`add_model_arguments`' options."""
    if args.netG is None:
        return load_generator(args.checkpoint, device)
    return load_released(args.netG, args.text_encoder, args.vocab, device, args.words_num, args.mask_mode)
