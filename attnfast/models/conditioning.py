"""Conditioning augmentation (``CA_NET`` of the original) and its KL term."""
import torch
from torch import nn

from attnfast import reference
from attnfast.ops import GLU
from . import _checks as check

KL_loss = reference.kl_loss  # noqa: N816 - the original's name: -0.5 * mean(1 + logvar - mu^2 - e^logvar)


class CA_NET(nn.Module):  # noqa: N801 - the original's name
    """Sentence code (B, t_dim) -> c_code, mu, logvar (each (B, c_dim)).

    ``fc`` = Linear(t_dim, 4*c_dim) and ``relu`` = GLU, as the original names them; the math is
    :func:`attnfast.reference.ca_encode` / :func:`~attnfast.reference.reparametrize`. Noise comes
    from ``torch.randn_like`` on the input's device (the original required CUDA).
    """

    def __init__(self, t_dim: int = 256, c_dim: int = 100):
        super().__init__()
        self.t_dim = t_dim
        self.c_dim = c_dim
        self.fc = nn.Linear(t_dim, c_dim * 4, bias=True)
        self.relu = GLU()  # no parameters; ca_encode applies the same gate

    def encode(self, text_embedding):
        """(B, t_dim) -> mu, logvar, each (B, c_dim)."""
        check.tensor("text_embedding", text_embedding, 2, f"(B, t_dim={self.t_dim})", floating=True)
        check.size("text_embedding", text_embedding, 1, self.t_dim, f"(B, {self.t_dim})", "t_dim")
        return reference.ca_encode(text_embedding, self.fc.weight, self.fc.bias)

    def reparametrize(self, mu, logvar, eps=None):
        """mu + exp(logvar / 2) * eps, eps ~ N(0, I) unless given; (B, c_dim)."""
        return reference.reparametrize(mu, logvar, eps)

    def forward(self, text_embedding, eps: torch.Tensor | None = None):
        """(B, t_dim) -> c_code, mu, logvar, each (B, c_dim). ``eps`` (B, c_dim) fixes the noise."""
        mu, logvar = self.encode(text_embedding)
        return self.reparametrize(mu, logvar, eps), mu, logvar
