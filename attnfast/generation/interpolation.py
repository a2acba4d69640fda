"""The GAN-INT path between two captions with one fixed noise (attnfast/interpolate.py holds the
math): the images along it, and the strip PNG of ``python -m attnfast.sample --interpolate A B``."""
import torch

from attnfast.data.grid import save_image_grid
from attnfast.engine.amp import autocast
from attnfast.interpolate import interpolate_text
from attnfast.models.text_encoding import encode_text
from .captions import encode_captions
from .loading import load_generator
from .noise import fixed_noise


@torch.no_grad()
def interpolation_images(netG, text_encoder, captions, cap_lens, words_num: int, steps: int,
                         noise: torch.Tensor, eps: torch.Tensor, amp: str = "off") -> torch.Tensor:
    """Images along the path from caption 0 to caption 1 with one fixed noise.

    captions (2, words_num) ids, cap_lens (2,), noise (1, z_dim), eps (1, ncf) (the CA noise).
    Returns (steps, 3, S, S) float images of the last stage, beta = linspace(0, 1, steps).
    """
    if steps < 2:
        raise ValueError(f"--steps must be >= 2, got {steps}")
    device = noise.device
    captions = captions.to(device)
    words, sentence = encode_text(text_encoder, captions, cap_lens, words_num)
    words, sentence, mask = words.float(), sentence.float(), captions == 0
    beta = torch.linspace(0, 1, steps, device=device)
    pick = lambda t, i: t[i:i + 1].expand(steps, *t.shape[1:])
    sent, wrd, msk = interpolate_text(pick(sentence, 0), pick(words, 0), pick(mask, 0),
                                      pick(sentence, 1), pick(words, 1), pick(mask, 1), beta)
    with autocast(amp, device):
        fakes, _, _, _ = netG(noise.expand(steps, -1), sent, wrd, msk, eps=eps.expand(steps, -1))
    return fakes[-1].float()


def interpolation_strip(checkpoint, caption_a: str, caption_b: str, out_path, steps: int = 8,
                        seed: int = 0, device: torch.device | None = None, amp: str = "off") -> dict:
    """Write the strip PNG (one row of ``steps`` images, beta under each) to ``out_path``."""
    device = device or torch.device("cpu")
    netG, text_encoder, vocab, config = load_generator(checkpoint, device)
    words_num = config["dataset"]["words_num"]
    ids, lens, _, _ = encode_captions([caption_a, caption_b], vocab, words_num)
    noise, eps = fixed_noise(config, 1, seed)
    images = interpolation_images(netG, text_encoder, ids, lens, words_num, steps, noise.to(device),
                                  eps.to(device), amp)
    labels = [f"beta={b:.2f}" for b in torch.linspace(0, 1, steps).tolist()]
    labels[0], labels[-1] = f"{caption_a} (beta=0)", f"{caption_b} (beta=1)"
    save_image_grid(images.cpu(), out_path, ncol=steps, captions=labels)
    return {"images": steps, "out": str(out_path), "caption_a": caption_a, "caption_b": caption_b}
