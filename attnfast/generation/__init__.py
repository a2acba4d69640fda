"""The generation core: the library under every way of drawing images (``python -m attnfast.sample``,
``attnfast.eval``, the demo, the seed-paper features, ``python -m attnfast.serve``).

    models = load_generator("runs/demo/gan.pt", device)          # or load_released(netG, text, vocab)
    core = SeededGenerator(models, device, max_batch=64)
    ids, lens, tokens, unknown = core.encode(["a large red circle in the center"])
    images, attention = core.draw(ids, lens, seeds=[7])           # (1, 3, S, S), (1, T, h, w)

Modules: captions (encode_captions), loading (load_generator, load_released), noise (fixed_noise,
seeded_noise), core (generate, SeededGenerator), interpolation (GAN-INT path), style_transfer,
batch_files (sample_to_files: PNG / npz output of the sample command).
"""
from .batch_files import sample_to_files
from .captions import EncodedCaptions, encode_captions
from .core import Drawn, SeededGenerator, batch_buckets, generate
from .errors import GenerationError
from .interpolation import interpolation_images, interpolation_strip
from .loading import GeneratorModels, load_generator, load_released
from .noise import fixed_noise, seeded_noise
from .style_transfer import load_image, style_transfer, transfer_images

__all__ = [
    "Drawn",
    "EncodedCaptions",
    "GenerationError",
    "GeneratorModels",
    "SeededGenerator",
    "batch_buckets",
    "encode_captions",
    "fixed_noise",
    "generate",
    "interpolation_images",
    "interpolation_strip",
    "load_generator",
    "load_image",
    "load_released",
    "sample_to_files",
    "seeded_noise",
    "style_transfer",
    "transfer_images",
]
