"""Attention grounding on the shapes dataset: the pointing game. For each word of a caption that
names an object's shape or colour, the peak of that word's attention map must fall inside the
ground-truth mask of the object(s) it names."""
import torch

from attnfast.data import object_mask_for_word


def pointing_game(attn: torch.Tensor, words: list[list[str]], scenes: list) -> dict:
    """attn (N, T, h, w) word attention of one stage; words[i] the caption's T_i tokens (in order,
    aligned with attn[i, :T_i]); scenes[i] its ground truth. Returns hits / trials and the chance
    rate (mean mask area) for the same trials."""
    hits, trials, chance = 0, 0, 0.0
    side = attn.shape[-1]
    for i, (tokens, scene) in enumerate(zip(words, scenes, strict=True)):
        for t, word in enumerate(tokens[:attn.shape[1]]):
            mask = object_mask_for_word(scene, word, resolution=side)
            if not mask.any():
                continue
            peak = int(attn[i, t].reshape(-1).float().argmax())
            hits += bool(mask.reshape(-1)[peak])
            trials += 1
            chance += float(mask.mean())
    return {"pointing_accuracy": hits / trials if trials else float("nan"),
            "chance": chance / trials if trials else float("nan"), "trials": trials}
