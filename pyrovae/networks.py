"""Plain ``nn.Module`` networks, shared by the Pyro model and guide and by the hand-written baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = [nn.Linear(sizes[0], sizes[1])]
    for d_in, d_out in zip(sizes[1:-1], sizes[2:], strict=True):
        layers += [nn.ReLU(), nn.Linear(d_in, d_out)]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """``x -> (loc, scale)`` of the Gaussian ``q(z | x)``."""

    def __init__(self, x_dim: int, hidden_dims: Sequence[int], z_dim: int):
        super().__init__()
        self.net = mlp([x_dim, *hidden_dims, 2 * z_dim])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(x).chunk(2, dim=-1)  # (..., z_dim) each
        # softplus keeps the scale positive by construction and, unlike exp, cannot overflow;
        # the floor keeps log q(z|x) finite when a unit collapses.
        return loc, F.softplus(raw_scale) + 1e-4


class Decoder(nn.Module):
    """``z -> logits`` of the pixels: the parameters of ``p(x | z)``."""

    def __init__(self, z_dim: int, hidden_dims: Sequence[int], x_dim: int):
        super().__init__()
        self.net = mlp([z_dim, *reversed(hidden_dims), x_dim])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (..., x_dim)
