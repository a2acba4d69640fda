"""The grounding figure of one caption: for each word, the DAMSM's word->region attention on a real
image the caption describes beside the generator's word attention on the image it drew.

Row 1 is the real image (rendered from the caption by the shapes grammar) with the DAMSM's map of
each word (words_loss's softmax over regions, gamma1); the next rows are the generated image of each
attentional stage with that stage's map of each word. Tiles of one column belong to one word, so the
two attentions of a word sit one above the other.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attnfast.data import render_scene, to_tensor
from attnfast.data.shapes import scene_for_caption
from attnfast.engine import checkpoint as ckpt
from attnfast.generation import encode_captions, generate, load_generator, seeded_noise
from attnfast.models.text_encoding import encode_text
from attnfast.viz import attention_figure, save_png
from . import grounding
from .shapes_eval import image_encoder_of


@torch.no_grad()
def grounding_figure(netG, text_encoder, image_encoder, vocab, config: dict, caption: str, seed: int = 0,
                     device: torch.device | None = None, tile: int = 128) -> Image.Image:
    """The figure of ``caption`` (a caption of the shapes grammar on the checkpoint's grid), drawn with
    seed ``seed`` (as ``python -m attnfast.sample --seed``). Raises ``ValueError`` for a caption the
    shapes grammar cannot draw, ``GenerationError`` for one with no word the vocabulary knows."""
    device = device or torch.device("cpu")
    words_num = config["dataset"]["words_num"]
    encoded = encode_captions([caption], vocab, words_num, warn=False)
    ids, lens, kept = encoded[0], encoded[1], encoded[2][0]
    scene = scene_for_caption(caption, np.random.default_rng(seed), resolution=config["damsm"]["image_size"],
                              grid=config["dataset"]["grid"])
    real = to_tensor(render_scene(scene))[None]
    regions, _ = image_encoder(real.to(device))
    words, _ = encode_text(text_encoder, ids.to(device), lens, words_num)
    damsm_map = grounding.damsm_word_attention(regions, words, lens, config["damsm"]["gamma1"])[0]
    noise, eps = seeded_noise([seed], config["model"]["z_dim"], netG.ncf)
    fakes, att_maps = generate(netG, text_encoder, ids, lens, noise.to(device), words_num, eps=eps.to(device))
    count = len(kept)
    images = [real[0]] + [f[0].cpu() for f in fakes[1:1 + len(att_maps)]]
    maps = [damsm_map[:count]] + [a[0, :count].cpu() for a in att_maps]
    labels = ["DAMSM, real"] + [f"G {a.shape[-1]}x{a.shape[-1]}, drawn" for a in att_maps]
    return attention_figure(images, maps, kept, tile=tile, row_labels=labels)


def save_grounding_figures(checkpoint, captions: list[str], out_dir, seed: int = 0,
                           device: torch.device | None = None) -> list[str]:
    """:func:`grounding_figure` of each caption of a GAN checkpoint into ``out_dir``/NNNN_grounding.png;
    returns the paths written."""
    device = device or torch.device("cpu")
    netG, text_encoder, vocab, config = load_generator(checkpoint, device)
    image_encoder = image_encoder_of(ckpt.load(checkpoint, map_location=device, kind="gan"), device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, caption in enumerate(captions):
        path = out_dir / f"{index:04d}_grounding.png"
        save_png(grounding_figure(netG, text_encoder, image_encoder, vocab, config, caption, seed, device), path)
        paths.append(str(path))
    return paths
