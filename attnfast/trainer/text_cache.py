"""Cache of the frozen text encoder's outputs per caption during GAN training (issue 8).

The GAN stage encodes every caption with the DAMSM text encoder, which never changes there; a
caption seen again (the next epoch, the same scene) reuses its words and sentence features.

Key: the dataset's ``(index, caption_index)`` of the batch dict (see
:func:`attnfast.data.collate_shapes`) together with the caption's token ids, so a dataset that
changed a caption can never be served a stale entry. Misses are encoded in one of two ways:

- per caption (``batched=False``, the fp32 trainer's choice): a miss is encoded on its own (batch
  of 1); an entry is then a fixed function of its caption, independent of which other captions
  shared its batch, and a resumed run (which starts with an empty cache) computes exactly what the
  uninterrupted run cached (bit for bit);
- batched (``batched=True``, the trainer's choice under autocast, issue 27): a batch with a miss is
  encoded whole in one encoder call, unpacked (every row runs all T steps: static shapes, no
  per-step batch that depends on the other rows' lengths), and its misses are stored. Each row's
  features are then a function of its caption and the batch size alone (checked bit for bit in
  tests/test_speed.py), so entries still do not depend on their batch-mates and a resumed run still
  computes exactly what the uninterrupted one cached; they differ from the per-caption (packed,
  batch of 1) encoding by float rounding only (~3e-8, far below bf16's). The cache is bounded (least recently used entries are dropped past
``max_bytes``) and emptied when the encoder's weights or mode change (parameter versions are
checked on every lookup, a host-only check).
"""
from collections import OrderedDict

import torch

from attnfast.models.text_encoding import encode_text


class TextFeatureCache:
    """Per-caption words (E, T) and sentence (E,) features of a frozen, eval-mode text encoder.

    Args:
        text_encoder: an ``RNN_ENCODER`` in eval mode (its dropout would make features random).
        words_num: T, the padded caption length the features are returned at.
        max_bytes: memory bound of the stored features (on the encoder's device); >= one entry.
        batched: encode a batch with misses in one unpacked encoder call (one LSTM run instead of
            one per caption); False encodes each miss on its own (batch of 1); see the module docstring.
    """

    def __init__(self, text_encoder: torch.nn.Module, words_num: int, max_bytes: int, batched: bool = False):
        self.text_encoder = text_encoder
        self.batched = bool(batched)
        self.words_num = int(words_num)
        self.max_bytes = int(max_bytes)
        self.entries: OrderedDict = OrderedDict()
        self.hits = self.misses = 0
        self._fingerprint = self._current_fingerprint()
        width = self._feature_width()
        self.entry_bytes = (width * self.words_num + width) * 4
        if self.max_bytes < self.entry_bytes:
            raise ValueError(f"text cache max_bytes={self.max_bytes} holds no entry of "
                             f"{self.entry_bytes} bytes (E={width}, T={self.words_num})")
        self.max_entries = self.max_bytes // self.entry_bytes

    def _feature_width(self) -> int:
        rnn = self.text_encoder
        return int(rnn.nhidden * rnn.num_directions)

    def _current_fingerprint(self) -> tuple:
        tensors = list(self.text_encoder.parameters()) + list(self.text_encoder.buffers())
        return (self.text_encoder.training,) + tuple((t.data_ptr(), t._version) for t in tensors)

    def _check_encoder(self) -> None:
        if self.text_encoder.training:
            raise RuntimeError("the text cache needs the text encoder in eval mode (dropout makes "
                               "its features random); call text_encoder.eval()")
        fingerprint = self._current_fingerprint()
        if fingerprint != self._fingerprint:
            self.entries.clear()
            self._fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.entries)

    @torch.no_grad()
    def lookup(self, captions: torch.Tensor, cap_lens: torch.Tensor, indices: torch.Tensor,
               caption_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a batch: words (B, E, T) and sentence (B, E), float32 on the encoder's device.

        captions (B, T) long and cap_lens, indices, caption_indices (B,) integer, on the CPU
        (the batch as collated; the keys are read on the host).
        """
        batch = captions.shape[0]
        for name, value in (("cap_lens", cap_lens), ("indices", indices), ("caption_indices", caption_indices)):
            if not torch.is_tensor(value) or value.dim() != 1 or value.shape[0] != batch:
                raise ValueError(f"{name} must be a (B,) = ({batch},) tensor for the text cache, got "
                                 f"{getattr(value, 'shape', type(value).__name__)}")
        self._check_encoder()
        device = next(self.text_encoder.parameters()).device
        tokens = captions.cpu().tolist()
        keys = [(i, c, tuple(t)) for i, c, t in zip(indices.tolist(), caption_indices.tolist(), tokens, strict=True)]
        found: dict = {}
        missing: dict = {}                    # key -> first row of the batch with that caption
        for row, key in enumerate(keys):
            entry = self.entries.get(key)
            if entry is not None:
                self.hits += 1
                self.entries.move_to_end(key)
                found[key] = entry
            elif key not in missing:
                self.misses += 1
                missing[key] = row
            else:
                self.hits += 1                # a repeat of a miss in the same batch
        if missing:
            rows = list(missing.values())
            if self.batched:                  # the whole batch, unpacked: rows independent of each other
                words, sentences = self._encode(captions.to(device), cap_lens, packed=False)
                encoded = [(words[r].clone(), sentences[r].clone()) for r in rows]   # own storage
            else:
                encoded = [tuple(t[0].contiguous() for t in self._encode(captions[r:r + 1].to(device),
                                                                         cap_lens[r:r + 1])) for r in rows]
            for key, entry in zip(missing, encoded, strict=True):
                found[key] = entry
                self.entries[key] = entry
                if len(self.entries) > self.max_entries:
                    self.entries.popitem(last=False)
        return (torch.stack([found[key][0] for key in keys]),
                torch.stack([found[key][1] for key in keys]))

    def _encode(self, captions: torch.Tensor, cap_lens: torch.Tensor,
                packed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions (M, T) in one encoder call: words (M, E, T), sentences (M, E) float32."""
        words, sentence = encode_text(self.text_encoder, captions, cap_lens, self.words_num,
                                      packed=packed)
        return words.float(), sentence.float()
