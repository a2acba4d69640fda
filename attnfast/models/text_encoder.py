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
                total_length: int | None = None, packed: bool = True):
        """Encode padded captions.

        Args:
            captions: (B, T) int64 token ids (0 = padding), any order of lengths.
            cap_lens: (B,) integer lengths in [1, T].
            hidden: initial state from :meth:`init_hidden` (None = zeros).
            mask: unused (kept for the original's signature).
            total_length: pad the word features to this length (>= max(cap_lens)) for static
                shapes; None pads to max(cap_lens) as the original.
            packed: True runs the RNN on a packed sequence (the original). False runs it
                unpacked over all T padded positions (static shapes, no host sync, CUDA-graph
                capturable; see :meth:`_unpacked`); the results are the same up to float rounding.
        Returns:
            words_emb (B, nhidden_total, T') with zeros past each caption's length, and
            sent_emb (B, nhidden_total): the final hidden states of the last layer, both
            directions, in the input order.
        """
        if not packed:
            return self._unpacked(captions, cap_lens, hidden, total_length)
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

    def _unpacked(self, captions: torch.Tensor, cap_lens, hidden, total_length: int | None):
        """The packed forward's results without packing: every row runs all T steps.

        The forward direction reads the padded row as is (its outputs up to cap_len - 1 are the
        packed ones). The backward direction must start at each row's last word, so it runs on
        the row reversed within its length (position t <- cap_len - 1 - t; padding stays at the
        end) and its outputs are put back with the same involutive index. Word outputs past
        cap_len are zeroed and the sentence embedding is each direction's output at step
        cap_len - 1 (its final hidden state). Values are checked only where a host read is allowed.

        captions (B, T) long; cap_lens (B,) integer, any device. Returns words (B, E, T') with
        T' = total_length or T, and sentence (B, E), in the RNN's dtype.
        """
        check.tensor("captions", captions, 2, "(B, T) token ids", floating=False)
        batch, num_words = captions.shape
        if not torch.is_tensor(cap_lens):
            cap_lens = torch.as_tensor(cap_lens)
        check.tensor("cap_lens", cap_lens, 1, f"(B,) = ({batch},)", floating=False)
        check.size("cap_lens", cap_lens, 0, batch, f"(B,) = ({batch},)", "B of captions")
        if check.may_sync(captions) and check.may_sync(cap_lens):
            self._validate(captions, cap_lens, None)
        out_len = num_words if total_length is None else int(total_length)
        if out_len < num_words:
            raise ValueError(f"total_length must be >= T = {num_words} with packed=False, got {out_len}")
        lens = cap_lens.to(device=captions.device, dtype=torch.long)
        steps = torch.arange(num_words, device=captions.device)
        valid = steps[None, :] < lens[:, None]                                # (B, T)
        reverse_index = torch.where(valid, lens[:, None] - 1 - steps[None, :], steps[None, :])
        last = (lens - 1).clamp(min=0)[:, None, None]                         # (B, 1, 1)
        if hidden is None:
            hidden = self.init_hidden(batch)
        h0 = hidden if self.rnn_type == "GRU" else None
        layer_input = self.drop(self.encoder(captions))                       # (B, T, ninput)
        finals = []
        for layer in range(self.nlayers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                state = (h0[k:k + 1],) if h0 is not None else (hidden[0][k:k + 1], hidden[1][k:k + 1])
                seq = layer_input if direction == 0 else _gather_time(layer_input, reverse_index)
                out = self._run_direction(seq, state, layer, direction)          # (B, T, nhidden)
                finals.append(out.gather(1, last.expand(-1, 1, out.shape[2]))[:, 0])
                outputs.append(out if direction == 0 else _gather_time(out, reverse_index))
            layer_input = torch.cat(outputs, dim=2)                           # (B, T, dirs*nhidden)
            if layer + 1 < self.nlayers and self.training and self.drop_prob > 0:
                layer_input = nn.functional.dropout(layer_input, self.drop_prob, training=True)
        words = layer_input.masked_fill(~valid[:, :, None], 0.0)
        if out_len > num_words:
            words = nn.functional.pad(words, (0, 0, 0, out_len - num_words))
        sent_emb = torch.cat(finals[-self.num_directions:], dim=1)            # (B, dirs*nhidden)
        return words.transpose(1, 2), sent_emb

    def _run_direction(self, seq: torch.Tensor, state: tuple, layer: int, direction: int) -> torch.Tensor:
        """One layer, one direction of ``self.rnn`` over (B, T, F) -> (B, T, nhidden), batch first."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        rnn = self.rnn
        params = [getattr(rnn, f"weight_ih{suffix}"), getattr(rnn, f"weight_hh{suffix}")]
        if rnn.bias:
            params += [getattr(rnn, f"bias_ih{suffix}"), getattr(rnn, f"bias_hh{suffix}")]
        if self.rnn_type == "LSTM":
            return torch.lstm(seq, state, params, rnn.bias, 1, 0.0, False, False, True)[0]
        return torch.gru(seq, state[0], params, rnn.bias, 1, 0.0, False, False, True)[0]


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, F) with its time axis permuted per row: out[b, t] = x[b, index[b, t]]."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))
