"""Conditioning augmentation (StackGAN / AttnGAN ``CA_NET``) and its KL term."""
import torch

from .blocks import glu


def ca_encode(sent_emb: torch.Tensor, fc_weight: torch.Tensor, fc_bias: torch.Tensor | None):
    """(B, E) sentence codes -> mu, logvar, each (B, c_dim) (linear to 4*c_dim, GLU, split)."""
    x = glu(torch.nn.functional.linear(sent_emb, fc_weight, fc_bias))     # (B, 2*c_dim)
    c_dim = x.shape[1] // 2
    return x[:, :c_dim], x[:, c_dim:]


def reparametrize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None):
    """c = mu + exp(logvar / 2) * eps with eps ~ N(0, I) (drawn when not given)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Original ``KL_loss``: -0.5 * mean(1 + logvar - mu^2 - exp(logvar)) (mean over all elements)."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
