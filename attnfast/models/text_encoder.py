"""AttnGAN's text encoder (``RNN_ENCODER`` of the original code/model.py, DESIGN.md §4)."""
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import _checks as check

RNN_TYPES = ("LSTM", "GRU")


class RNN_ENCODER(nn.Module):  # noqa: N801 - the original's name
    """Embedding -> dropout -> (bi)LSTM/GRU over the caption's words.

    Same attributes and parameter names as the original (``encoder``, ``drop``, ``rnn``), so its
    DAMSM text-encoder checkpoints load. ``nhidden`` is the total feature size (both directions);
    as in the original the attribute ``self.nhidden`` holds the size per direction.

    Args:
        ntoken: vocabulary size. ninput: word embedding size. drop_prob: dropout after the
        embedding (and between RNN layers when nlayers > 1). nhidden: output size (256 = DAMSM's
        EMBEDDING_DIM). rnn_type: "LSTM" or "GRU". n_steps: WORDS_NUM (kept as an attribute only).
    """

    def __init__(self, ntoken: int, ninput: int = 300, drop_prob: float = 0.5, nhidden: int = 256,
                 nlayers: int = 1, bidirectional: bool = True, rnn_type: str = "LSTM",
                 n_steps: int = 18):
        super().__init__()
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {RNN_TYPES}, got {rnn_type!r}")
        self.n_steps = n_steps
        self.ntoken = ntoken
        self.ninput = ninput
        self.drop_prob = drop_prob
        self.nlayers = nlayers
        self.bidirectional = bidirectional
        self.rnn_type = rnn_type
        self.num_directions = 2 if bidirectional else 1
        if nhidden % self.num_directions:
            raise ValueError(f"nhidden must be divisible by the {self.num_directions} directions, got {nhidden}")
        self.nhidden = nhidden // self.num_directions
        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        rnn_cls = nn.LSTM if rnn_type == "LSTM" else nn.GRU
        # nn.LSTM's dropout acts between layers only: with one layer it is a no-op (and warns).
        self.rnn = rnn_cls(ninput, self.nhidden, nlayers, batch_first=True,
                           dropout=drop_prob if nlayers > 1 else 0.0, bidirectional=bidirectional)
        self.init_weights()

    def init_weights(self):
        """Embedding uniform in [-0.1, 0.1]; the RNN keeps PyTorch's initialisation (as the original)."""
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    def init_hidden(self, bsz: int):
        """Zero initial state(s), (nlayers * num_directions, bsz, nhidden per direction)."""
        weight = next(self.parameters())
        shape = (self.nlayers * self.num_directions, bsz, self.nhidden)
        if self.rnn_type == "LSTM":
            return weight.new_zeros(shape), weight.new_zeros(shape)
        return weight.new_zeros(shape)

    def _lengths(self, cap_lens, batch: int, num_words: int) -> torch.Tensor:
        if not torch.is_tensor(cap_lens):
            try:
                cap_lens = torch.as_tensor(cap_lens)
            except Exception as exc:
                raise TypeError(f"cap_lens must be a (B,) integer tensor or sequence, "
                                f"got {type(cap_lens).__name__}") from exc
        check.tensor("cap_lens", cap_lens, 1, f"(B,) = ({batch},)", floating=False)
        check.size("cap_lens", cap_lens, 0, batch, f"(B,) = ({batch},)", "B of captions")
        lengths = cap_lens.detach().to("cpu", torch.long)  # pack_padded_sequence wants CPU lengths
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > num_words:
            raise ValueError(f"cap_lens must lie in [1, T={num_words}] (T = captions.size(1)), "
                             f"got values in [{low}, {high}]")
        return lengths

    def _validate(self, captions, cap_lens, total_length):
        check.tensor("captions", captions, 2, "(B, T) token ids", floating=False)
        if captions.dtype not in (torch.long, torch.int32):
            raise TypeError(f"captions must be int64 (or int32) token ids, got {check.describe(captions)}")
        if check.may_sync(captions):
            low, high = int(captions.min()), int(captions.max())
            if low < 0 or high >= self.ntoken:
                raise ValueError(f"captions must hold token ids in [0, ntoken={self.ntoken}), "
                                 f"got values in [{low}, {high}]")
        batch, num_words = captions.shape
        lengths = self._lengths(cap_lens, batch, num_words)
        if total_length is not None and total_length < int(lengths.max()):
            raise ValueError(f"total_length must be >= max(cap_lens) = {int(lengths.max())}, "
                             f"got {total_length}")
        return lengths

    def forward(self, captions: torch.Tensor, cap_lens, hidden=None, mask=None, *,
                total_length: int | None = None):
        """Encode padded captions.

        Args:
            captions: (B, T) int64 token ids (0 = padding), any order of lengths.
            cap_lens: (B,) integer lengths in [1, T].
            hidden: initial state from :meth:`init_hidden` (None = zeros).
            mask: unused (kept for the original's signature).
            total_length: pad the word features to this length (>= max(cap_lens)) for static
                shapes; None pads to max(cap_lens) as the original.
        Returns:
            words_emb (B, nhidden_total, T') with zeros past each caption's length, and
            sent_emb (B, nhidden_total): the final hidden states of the last layer, both
            directions, in the input order.
        """
        lengths = self._validate(captions, cap_lens, total_length)
        emb = self.drop(self.encoder(captions))                           # (B, T, ninput)
        # enforce_sorted=False sorts inside and restores the input order of outputs and h_n.
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        output, hidden = self.rnn(packed, hidden)
        output = pad_packed_sequence(output, batch_first=True,
                                     total_length=total_length)[0]       # (B, T', 2*nhidden)
        words_emb = output.transpose(1, 2)                                # (B, 2*nhidden, T')
        h_n = hidden[0] if self.rnn_type == "LSTM" else hidden            # (layers*dirs, B, nhidden)
        # The original flattens all layers (only right for nlayers=1); take the last layer's.
        sent_emb = h_n[-self.num_directions:].transpose(0, 1).contiguous()  # (B, dirs, nhidden)
        sent_emb = sent_emb.view(-1, self.nhidden * self.num_directions)  # (B, dirs*nhidden)
        return words_emb, sent_emb
