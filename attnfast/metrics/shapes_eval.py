"""Text–image faithfulness of a trained generator on the shapes dataset.

Generates one image per test caption and measures: attribute accuracy (the cached cell classifier
against the caption's scene), the attention pointing game (first attentional stage), and
R-precision with the checkpoint's DAMSM encoders; the classifier's accuracy on the real test images
is reported beside it as the ceiling. ``diversity``: n samples of each of K test captions against n
real renderings of each (:mod:`attnfast.metrics.diversity`).
"""
import json
from pathlib import Path

import torch

from attnfast.data import ShapesDataset, collate_shapes
from attnfast.engine import checkpoint as ckpt
from attnfast.generation import generate, load_generator, seeded_noise
from attnfast.metrics.r_precision import r_precision_from_features
from attnfast.models.build import build_image_encoder
from attnfast.models.text_encoding import encode_text
from . import diversity, grounding, shapes_accuracy


@torch.no_grad()
def generate_for_dataset(netG, text_encoder, dataset, words_num: int, z_dim: int, batch: int,
                         seed: int, device: torch.device, all_stages: bool = False):
    """Images of the last stage (N, 3, S, S), attention of the first attentional stage (N, T, h, w)
    (or None), and the batch tensors, for every item of ``dataset``; item i is drawn with seed
    ``seed + i`` (attnfast.generation.seeded_noise: z and the CA noise, so the result is reproducible).

    ``all_stages``: the images are then every stage's (a list of (N, 3, s, s)) and the attention every
    attentional stage's (a list of (N, T, h, w), empty for a generator without attention)."""
    images, attention, captions, lens = [], [], [], []
    for start in range(0, len(dataset), batch):
        items = collate_shapes([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
        count = items["captions"].shape[0]
        noise, eps = seeded_noise(range(seed + start, seed + start + count), z_dim, netG.ncf)
        fakes, att_maps = generate(netG, text_encoder, items["captions"], items["cap_lens"], noise.to(device),
                                   words_num, eps=eps.to(device))
        images.append([f.cpu() for f in fakes] if all_stages else fakes[-1].cpu())
        if att_maps:
            attention.append([a.cpu() for a in att_maps] if all_stages else att_maps[0].cpu())
        captions.append(items["captions"])
        lens.append(items["cap_lens"])
    if all_stages:
        return ([torch.cat(stage) for stage in zip(*images, strict=True)],
                [torch.cat(stage) for stage in zip(*attention, strict=True)],
                torch.cat(captions), torch.cat(lens))
    return (torch.cat(images), torch.cat(attention) if attention else None, torch.cat(captions),
            torch.cat(lens))


def image_encoder_of(state: dict, device: torch.device):
    """The DAMSM image encoder stored in a loaded GAN checkpoint ``state``, in eval mode on ``device``."""
    image_encoder = build_image_encoder(state["config"])
    image_encoder.load_state_dict(state["image_encoder"])
    return image_encoder.to(device).eval()


def evaluate_checkpoint(checkpoint, out_json=None, device: torch.device | None = None,
                        num_images: int = 500, batch: int = 50, seed: int = 0, r_runs: int = 10,
                        classifier_cache=None, diversity_captions: int = diversity.DEFAULT_CAPTIONS,
                        diversity_n: int = diversity.DEFAULT_N) -> dict:
    """All shapes metrics of a GAN checkpoint as a dict (also written to ``out_json``).

    ``diversity_captions`` K (0: none) and ``diversity_n`` n size the "diversity" entry: n samples of
    each of the first K test captions (seeds ``seed + j``)."""
    device = device or torch.device("cpu")
    if diversity_captions < 0:
        raise ValueError(f"diversity_captions must be >= 0 (0: no diversity), got {diversity_captions}")
    if diversity_captions:
        diversity.check_sets(diversity_captions, diversity_n)
    netG, text_encoder, vocab, config = load_generator(checkpoint, device)
    state = ckpt.load(checkpoint, map_location=device, kind="gan")
    image_encoder = image_encoder_of(state, device)
    words_num = config["dataset"]["words_num"]
    dataset = ShapesDataset(num_images, resolution=64, seed=config["dataset"]["seed"], split="test",
                            captions_per_image=config["dataset"]["captions_per_image"],
                            words_num=words_num, max_objects=config["dataset"]["max_objects"],
                            grid=config["dataset"]["grid"])
    scenes = [dataset.get_scene(i) for i in range(num_images)]
    stage_images, stage_attention, captions, lens = generate_for_dataset(
        netG, text_encoder, dataset, words_num, config["model"]["z_dim"], batch, seed, device, all_stages=True)
    images = stage_images[-1]
    attention = stage_attention[0] if stage_attention else None
    classifier = shapes_accuracy.cached_classifier(classifier_cache)
    real = torch.stack([dataset[i]["images"][0] for i in range(num_images)])
    report = {
        "checkpoint": str(checkpoint), "step": int(state["step"]), "images": num_images,
        "attribute_accuracy": shapes_accuracy.attribute_accuracy(classifier, images, scenes),
        "attribute_accuracy_real_images": shapes_accuracy.attribute_accuracy(classifier, real, scenes),
    }
    if attention is not None:
        tokens = [vocab.decode(row[:n]).split() for row, n in zip(captions, lens.tolist(), strict=True)]
        report["pointing_game"] = grounding.pointing_game(attention, tokens, scenes)
    report["grounding"] = grounding_report(image_encoder, text_encoder, stage_images[-1], stage_attention,
                                           captions, lens, vocab, config, dataset, scenes, device, batch)
    report["r_precision"] = _r_precision(image_encoder, text_encoder, images, captions, lens, words_num,
                                         config, device, r_runs, seed)
    if diversity_captions:
        texts = diversity.shapes_test_captions(config, diversity_captions)
        report["diversity"] = diversity.evaluate_diversity((netG, text_encoder, vocab, config), classifier,
                                                           texts, diversity_n, seed, batch, device)
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(report, indent=2))
    return report


@torch.no_grad()
def grounding_report(image_encoder, text_encoder, fakes, stage_attention, captions, lens, vocab, config,
                     dataset, scenes, device, batch: int = 50) -> dict:
    """The pointing game per word class (colour, shape, size, position) of

    * ``damsm_real``: the DAMSM's word->region attention (words_loss's softmax over regions, gamma1)
      on the real test images of ``dataset`` with their captions,
    * ``damsm_real_without_eq8``: the same without Eq. 8's softmax over words (the attention the
      ``gan.attention_grounding`` term teaches),
    * ``damsm_generated``: the same on the generated images ``fakes`` (N, 3, S, S),
    * ``generator``: the generator's word attention at each attentional stage, keyed by the side of
      its map (``stage_attention``: per stage (N, T, h, w)),

    each on the captions ``captions`` (N, T) / ``lens`` (N,) and the ground truth ``scenes``.
    """
    tokens = [vocab.decode(row[:n]).split() for row, n in zip(captions, lens.tolist(), strict=True)]
    real = torch.stack([dataset[i]["images"][-1] for i in range(len(scenes))])
    out = damsm_pointing(image_encoder, text_encoder, real, captions, lens, tokens, scenes, config, device, batch,
                         {"damsm_real": True, "damsm_real_without_eq8": False})
    out.update(damsm_pointing(image_encoder, text_encoder, fakes, captions, lens, tokens, scenes, config, device,
                              batch, {"damsm_generated": True}))
    out["generator"] = {f"stage_{att.shape[-1]}": grounding.pointing_by_class(att, tokens, scenes)
                        for att in stage_attention}
    return out


@torch.no_grad()
def damsm_pointing(image_encoder, text_encoder, images, captions, lens, tokens, scenes, config, device,
                   batch: int = 50, modes: dict | None = None) -> dict:
    """:func:`attnfast.metrics.grounding.pointing_by_class` of the DAMSM's word->region attention on
    ``images`` (N, 3, S, S) in [-1, 1] (the encoder resizes them itself) with ``captions`` (N, T) /
    ``lens`` (N,) (``tokens`` their words), once per entry of ``modes`` (name -> word_softmax; default
    ``{"damsm": True}``; False: without Eq. 8), from one pass of the encoders. Returns name -> result."""
    modes = modes or {"damsm": True}
    maps = {name: [] for name in modes}
    for start in range(0, images.shape[0], batch):
        stop = start + batch
        regions, _ = image_encoder(images[start:stop].to(device))
        words, _ = encode_text(text_encoder, captions[start:stop].to(device), lens[start:stop],
                               config["dataset"]["words_num"])
        for name, word_softmax in modes.items():
            maps[name] += grounding.damsm_word_attention(regions, words, lens[start:stop],
                                                         config["damsm"]["gamma1"], word_softmax)
    return {name: grounding.pointing_by_class(found, tokens, scenes) for name, found in maps.items()}


@torch.no_grad()
def _r_precision(image_encoder, text_encoder, images, captions, lens, words_num, config, device,
                 runs, seed):
    regions, codes, words, sentences = [], [], [], []
    for start in range(0, images.shape[0], 100):
        r, c = image_encoder(images[start:start + 100].to(device))
        w, s = encode_text(text_encoder, captions[start:start + 100].to(device), lens[start:start + 100],
                           words_num)
        regions.append(r.float().cpu()), codes.append(c.float().cpu())
        words.append(w.float().cpu()), sentences.append(s.float().cpu())
    damsm = config["damsm"]
    return r_precision_from_features(torch.cat(regions), torch.cat(codes), torch.cat(words),
                                     torch.cat(sentences), lens, gamma1=damsm["gamma1"],
                                     gamma2=damsm["gamma2"], runs=runs, seed=seed)
