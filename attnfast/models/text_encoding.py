"""Captions through the text encoder, and the generator's forward on encoded captions: the two
model calls that training, generation, metrics and serving share.

:func:`encode_text` runs the DAMSM text encoder (RNN_ENCODER) on a padded batch of caption ids;
:func:`generate` is the one forward pass every front end runs (sample, eval, the seed-paper
features, serve, style training), re-exported as ``attnfast.generation.generate``.
"""
import torch

from attnfast.engine.amp import autocast


def encode_text(text_encoder, captions: torch.Tensor, cap_lens: torch.Tensor, words_num: int,
                packed: bool = True):
    """words (B, E, words_num) padded to the fixed length, sentence (B, E). ``packed=False`` runs
    the RNN unpacked over the padded batch (static shapes, no host sync; CUDA-graph capturable)."""
    hidden = text_encoder.init_hidden(captions.shape[0])
    return text_encoder(captions, cap_lens, hidden, total_length=words_num, packed=packed)


@torch.no_grad()
def generate(netG, text_encoder, captions, cap_lens, noise, words_num: int, amp: str = "off", eps=None,
             packed: bool = True):
    """Images of every stage and attention maps for a batch (see G_NET.forward).

    captions (B, words_num) long ids, cap_lens (B,) long, noise (B, z_dim); ``eps`` (B, ncf) fixes
    the CA noise (drawn from the global RNG when None); ``packed=False`` runs the text encoder
    unpacked (no host sync: CUDA-graph capturable). Returns (fakes: per stage (B, 3, r, r) float32 in
    [-1, 1], att_maps: per attentional stage (B, words_num, h, w) float32).
    """
    device = noise.device
    words, sentence = encode_text(text_encoder, captions.to(device), cap_lens, words_num, packed=packed)
    with autocast(amp, device):
        fakes, att_maps, _, _ = netG(noise, sentence.float(), words.float(), captions.to(device) == 0, eps=eps)
    return [f.float() for f in fakes], [a.float() for a in att_maps]
