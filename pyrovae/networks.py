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


def gaussian_parameters(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` from a layer's output (..., 2 * z_dim)."""
    loc, raw_scale = out.chunk(2, dim=-1)  # (..., z_dim) each
    # softplus keeps the scale positive by construction and, unlike exp, cannot overflow;
    # the floor keeps log q(z|x) finite when a unit collapses.
    return loc, F.softplus(raw_scale) + 1e-4


class Encoder(nn.Module):
    """``x -> (loc, scale)`` of a diagonal Gaussian over ``z``: ``q(z | x)``, or ``p(z1 | z2)``."""

    def __init__(self, x_dim: int, hidden_dims: Sequence[int], z_dim: int):
        super().__init__()
        self.net = mlp([x_dim, *hidden_dims, 2 * z_dim])

    @property
    def context_dim(self) -> int:
        return self.net[-1].in_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_parameters(self.net(x))

    def with_context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loc, scale, h)``: ``h`` the last hidden layer (..., context_dim), the context of a flow."""
        h = self.net[:-1](x)
        return *gaussian_parameters(self.net[-1](h)), h


class JointEncoder(nn.Module):
    """``(a, b) -> (loc, scale)``: each input through a layer of its own, then together (the
    VampPrior paper's ``q(z1 | x, z2)``)."""

    def __init__(self, a_dim: int, b_dim: int, hidden_dims: Sequence[int], z_dim: int):
        super().__init__()
        width = hidden_dims[-1]
        self.a, self.b = mlp([a_dim, width]), mlp([b_dim, width])
        self.joint = mlp([2 * width, *hidden_dims, 2 * z_dim])

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = torch.broadcast_tensors(self.a(a), self.b(b))  # particles of b, one a: (..., width)
        return gaussian_parameters(self.joint(F.relu(torch.cat([a, b], dim=-1))))


class JointDecoder(nn.Module):
    """``(z1, z2) -> `` the parameters of ``p(x | z1, z2)``, each latent through a layer of its own."""

    def __init__(self, z1_dim: int, z2_dim: int, hidden_dims: Sequence[int], x_dim: int):
        super().__init__()
        width = hidden_dims[0]
        self.z1, self.z2 = mlp([z1_dim, width]), mlp([z2_dim, width])
        self.joint = mlp([2 * width, *reversed(hidden_dims), x_dim])

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return self.joint(F.relu(torch.cat([self.z1(z1), self.z2(z2)], dim=-1)))  # (..., x_dim)


class Decoder(nn.Module):
    """``z -> logits`` of the pixels: the parameters of ``p(x | z)``."""

    def __init__(self, z_dim: int, hidden_dims: Sequence[int], x_dim: int):
        super().__init__()
        self.net = mlp([z_dim, *reversed(hidden_dims), x_dim])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (..., x_dim)
