"""Plain ``nn.Module`` networks, shared by the Pyro model and guide and by the hand-written baseline.

The architecture is a registry of hidden layers (``fit --arch``): ``mlp``, linear layers and ReLU;
``gated``, the gated dense layers of the VampPrior paper; ``conv``, convolutions where a network reads
or writes an image and linear + ReLU layers elsewhere; ``gated-conv``, the gated convolutions of the
VampPrior paper's ConvHVAE where a network reads or writes an image, gated dense layers elsewhere;
``tanh``, linear layers and tanh (the IWAE paper's). A second registry, ``SCALES`` (``fit --scale``),
says how the Gaussians' standard deviations come from the networks' outputs. Every network maps
``(..., d_in)`` to ``(..., d_out)``, whatever the leading (particle, sample) dimensions; images are flat
vectors between networks, and a convolutional network gives them their ``(C, H, W)`` shape inside itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import registrar

NETWORKS: dict[str, type[Architecture]] = {}
register = registrar(NETWORKS)


class Architecture:
    """How hidden layers are made; ``dense`` stacks them and ends in a plain linear layer."""

    name: str

    @staticmethod
    def hidden_layer(d_in: int, d_out: int) -> list[nn.Module]:
        raise NotImplementedError

    @classmethod
    def dense(cls, sizes: Sequence[int]) -> nn.Sequential:
        """Hidden layers ``sizes[0] -> ... -> sizes[-2]``, then ``Linear(sizes[-2], sizes[-1])``."""
        layers: list[nn.Module] = []
        for d_in, d_out in zip(sizes[:-2], sizes[1:-1], strict=True):
            layers += cls.hidden_layer(d_in, d_out)
        return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))

    @classmethod
    def check(cls, image_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` where this architecture cannot read images of ``image_shape``."""

    @classmethod
    def reader(cls, d_in: int, width: int, image_shape: tuple[int, ...] | None = None) -> nn.Module:
        """One hidden layer ``d_in -> width``, reading an image of ``image_shape`` when given."""
        return nn.Sequential(*cls.hidden_layer(d_in, width))

    @classmethod
    def reading(cls, sizes: Sequence[int], image_shape: tuple[int, ...] | None = None) -> nn.Sequential:
        """Like :meth:`dense`, where ``sizes[0]`` values are an image of ``image_shape`` when given."""
        return cls.dense(sizes)

    @classmethod
    def writing(cls, sizes: Sequence[int], image_shape: tuple[int, ...] | None = None) -> nn.Sequential:
        """Like :meth:`dense`, where ``sizes[-1]`` values are parameters of each pixel of such an image."""
        return cls.dense(sizes)


@register("mlp")
class MLP(Architecture):
    """``relu(W x + b)``."""

    @staticmethod
    def hidden_layer(d_in, d_out):
        return [nn.Linear(d_in, d_out), nn.ReLU()]


@register("tanh")
class Tanh(Architecture):
    """``tanh(W x + b)`` (Burda et al., 2015: the IWAE paper's 200-200 networks)."""

    @staticmethod
    def hidden_layer(d_in, d_out):
        return [nn.Linear(d_in, d_out), nn.Tanh()]


class GatedDense(nn.Module):
    """``(W_1 x + b_1) * sigmoid(W_2 x + b_2)`` (Dauphin et al., 2017), as the VampPrior paper's networks
    (jmtomczak/vae_vampprior, ``utils/nn.py``)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.h, self.g = nn.Linear(d_in, d_out), nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


@register("gated")
class Gated(Architecture):
    """Gated dense layers (the VampPrior and Exemplar-VAE tables' 2 x 300 networks)."""

    @staticmethod
    def hidden_layer(d_in, d_out):
        return [GatedDense(d_in, d_out)]


def _chw(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)  # grey images: one channel


class ConvReader(nn.Module):
    """An image ``(..., C*H*W) -> (..., width)``: two 4x4 convolutions of stride 2 (32 then 64 channels,
    each halving the sides, as DCGAN's and most VAE papers' small images do), then a linear layer."""

    def __init__(self, image_shape: tuple[int, ...], width: int):
        super().__init__()
        self.shape = _chw(image_shape)
        c, h, w = self.shape
        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten()
        )
        self.out = nn.Sequential(nn.Linear(64 * (h // 4) * (w // 4), width), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.out(self.convs(x.reshape(-1, *self.shape))).reshape(*lead, -1)  # (..., width)


class ConvWriter(nn.Module):
    """``(..., d_in) ->`` the parameters of each pixel, ``(..., P*C*H*W)`` parameter by parameter: linear
    layers to ``64 x H/4 x W/4``, then two 4x4 transposed convolutions of stride 2 (the reader mirrored)."""

    def __init__(self, sizes: Sequence[int], image_shape: tuple[int, ...]):
        super().__init__()
        c, h, w = self.shape = _chw(image_shape)
        self.params = sizes[-1] // (c * h * w)  # parameters per pixel
        self.grid = (64, h // 4, w // 4)
        self.dense = MLP.dense([*sizes[:-1], math.prod(self.grid)])
        self.deconvs = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, self.params * c, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        out = self.deconvs(self.dense(z).reshape(-1, *self.grid))  # (B, P*C, H, W)
        return out.reshape(*lead, -1)  # (..., P*C*H*W): channel p*C + c is parameter p of channel c


class ImageArchitecture(Architecture):
    """Convolutions (``Reader``, ``Writer``) where a network reads or writes an image, whose sides must
    be divisible by 4; the ``hidden_layer`` of the architecture it is mixed with elsewhere."""

    Reader: type[nn.Module]
    Writer: type[nn.Module]

    @classmethod
    def check(cls, image_shape):
        if any(side % 4 for side in image_shape[-2:]):
            raise ValueError(
                f"--arch {cls.name} needs image sides divisible by 4, and these images are {image_shape}"
            )

    @classmethod
    def reader(cls, d_in, width, image_shape=None):
        return super().reader(d_in, width) if image_shape is None else cls.Reader(image_shape, width)

    @classmethod
    def reading(cls, sizes, image_shape=None):
        if image_shape is None:
            return cls.dense(sizes)
        return nn.Sequential(cls.Reader(image_shape, sizes[1]), *cls.dense(sizes[1:]))

    @classmethod
    def writing(cls, sizes, image_shape=None):
        if image_shape is None:
            return cls.dense(sizes)
        return nn.Sequential(cls.Writer(sizes, image_shape))


@register("conv")
class Conv(ImageArchitecture, MLP):
    """Convolutions where a network reads or writes an image (28 x 28 grey, 32 x 32 colour), linear +
    ReLU layers elsewhere."""

    Reader, Writer = ConvReader, ConvWriter


class GatedConv2d(nn.Module):
    """``conv_h(x) * sigmoid(conv_g(x))``, two convolutions of the same shape (jmtomczak/vae_vampprior,
    ``utils/nn.py``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        padding = kernel // 2
        self.h = nn.Conv2d(c_in, c_out, kernel, stride, padding)
        self.g = nn.Conv2d(c_in, c_out, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedConvReader(nn.Module):
    """An image ``(..., C*H*W) -> (..., width)``: the ConvHVAE's ``q(z2 | x)`` convolutions (7x7 to 32
    channels, 3x3 stride 2, 5x5 to 64, 3x3 stride 2, 3x3 to 6: ``6 x H/4 x W/4`` features, 294 on 28 x 28
    images), then a gated dense layer to ``width``."""

    def __init__(self, image_shape: tuple[int, ...], width: int):
        super().__init__()
        self.shape = _chw(image_shape)
        c, h, w = self.shape
        self.convs = nn.Sequential(
            GatedConv2d(c, 32, 7), GatedConv2d(32, 32, 3, 2), GatedConv2d(32, 64, 5),
            GatedConv2d(64, 64, 3, 2), GatedConv2d(64, 6, 3), nn.Flatten(),
        )  # fmt: skip
        self.out = GatedDense(6 * (h // 4) * (w // 4), width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.out(self.convs(x.reshape(-1, *self.shape))).reshape(*lead, -1)  # (..., width)


class GatedConvWriter(nn.Module):
    """``(..., d_in) ->`` the parameters of each pixel, ``(..., P*C*H*W)``, as the ConvHVAE's ``p(x | z1,
    z2)``: gated dense layers to one value per pixel, shaped as the image, four 3x3 gated convolutions
    of 64 channels at full resolution, a 1x1 convolution to the ``P`` parameters of each channel."""

    def __init__(self, sizes: Sequence[int], image_shape: tuple[int, ...]):
        super().__init__()
        c, h, w = self.shape = _chw(image_shape)
        self.params = sizes[-1] // (c * h * w)  # parameters per pixel
        layers: list[nn.Module] = []
        for d_in, d_out in zip(sizes[:-1], [*sizes[1:-1], c * h * w], strict=True):
            layers.append(GatedDense(d_in, d_out))
        self.dense = nn.Sequential(*layers)
        self.convs = nn.Sequential(
            GatedConv2d(c, 64, 3), GatedConv2d(64, 64, 3), GatedConv2d(64, 64, 3), GatedConv2d(64, 64, 3),
            nn.Conv2d(64, self.params * c, 1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        out = self.convs(self.dense(z).reshape(-1, *self.shape))  # (B, P*C, H, W)
        return out.reshape(*lead, -1)  # (..., P*C*H*W): channel p*C + c is parameter p of channel c


@register("gated-conv")
class GatedConv(ImageArchitecture, Gated):
    """The VampPrior paper's ConvHVAE networks: gated convolutions where a network reads or writes an
    image, gated dense layers elsewhere."""

    Reader, Writer = GatedConvReader, GatedConvWriter


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    return MLP.dense(sizes)


SCALES: dict[str, type[Scale]] = {}
register_scale = registrar(SCALES)


class Scale:
    """How a network's unconstrained output ``raw`` becomes a Gaussian's standard deviation ``sigma``
    (``fit --scale``): the encoders' ``q(z | x)``, ``q(z1 | x, z2)`` and the HVAE's ``p(z1 | z2)``."""

    name: str

    @staticmethod
    def sigma(raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_scale("softplus")
class Softplus(Scale):
    """``sigma = softplus(raw) + 1e-4``: positive by construction and, unlike exp, never overflowing;
    the floor keeps log q(z | x) finite when a unit collapses. Unbounded above, down to 1e-4 below."""

    @staticmethod
    def sigma(raw):
        return F.softplus(raw) + 1e-4


@register_scale("bounded")
class BoundedLogVariance(Scale):
    """``log sigma^2 = hardtanh(raw, -6, 2)``, so ``sigma`` in ``[e^-3, e] = [0.050, 2.72]``: the VampPrior
    paper's code (jmtomczak/vae_vampprior: every log-variance is ``NonLinear(..., nn.Hardtanh(min_val=-6.,
    max_val=2.))``). At sigma >= e^-3 a log-density weighs a draw's squared distance from its mean by at
    most e^6 / 2 = 202 a unit, where softplus's floor allows 5e7; a unit held at a bound gets no gradient
    through its scale, as there."""

    LOG_VARIANCE = (-6.0, 2.0)

    @staticmethod
    def sigma(raw):
        return torch.exp(0.5 * F.hardtanh(raw, *BoundedLogVariance.LOG_VARIANCE))


def gaussian_parameters(out: torch.Tensor, scale: str = "softplus") -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, sigma)`` from a layer's output (..., 2 * z_dim), ``sigma`` by the ``scale`` of SCALES."""
    loc, raw = out.chunk(2, dim=-1)  # (..., z_dim) each
    return loc, SCALES[scale].sigma(raw)


class Encoder(nn.Module):
    """``x -> (loc, scale)`` of a diagonal Gaussian over ``z``: ``q(z | x)``, or ``p(z1 | z2)``."""

    def __init__(
        self,
        x_dim: int,
        hidden_dims: Sequence[int],
        z_dim: int,
        arch: str = "mlp",
        image_shape: tuple[int, ...] | None = None,
        scale: str = "softplus",
    ):
        super().__init__()
        self.net = NETWORKS[arch].reading([x_dim, *hidden_dims, 2 * z_dim], image_shape)
        self.scale = scale

    @property
    def context_dim(self) -> int:
        return self.net[-1].in_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_parameters(self.net(x), self.scale)

    def with_context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loc, scale, h)``: ``h`` the last hidden layer (..., context_dim), the context of a flow."""
        h = self.net[:-1](x)
        return *gaussian_parameters(self.net[-1](h), self.scale), h


class JointEncoder(nn.Module):
    """``(a, b) -> (loc, scale)``: each input through a layer of its own, then together (the
    VampPrior paper's ``q(z1 | x, z2)``)."""

    def __init__(
        self,
        a_dim: int,
        b_dim: int,
        hidden_dims: Sequence[int],
        z_dim: int,
        arch: str = "mlp",
        image_shape: tuple[int, ...] | None = None,
        scale: str = "softplus",
    ):
        super().__init__()
        layers, width = NETWORKS[arch], hidden_dims[-1]
        self.a = layers.reader(a_dim, width, image_shape)  # a: the image
        self.scale = scale
        self.b = nn.Sequential(*layers.hidden_layer(b_dim, width))
        self.joint = layers.dense([2 * width, *hidden_dims[1:], 2 * z_dim])

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.given(self.a(a), b)

    def given(self, a_features: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` from ``self.a(a)``, (N, width), read once for many draws of b."""
        b = self.b(b)  # (..., N, width): particles of b, one a
        joint = self.joint(torch.cat(torch.broadcast_tensors(a_features, b), dim=-1))
        return gaussian_parameters(joint, self.scale)


class JointDecoder(nn.Module):
    """``(z1, z2) -> `` the parameters of ``p(x | z1, z2)``, each latent through a layer of its own."""

    def __init__(
        self,
        z1_dim: int,
        z2_dim: int,
        hidden_dims: Sequence[int],
        x_dim: int,
        arch: str = "mlp",
        image_shape: tuple[int, ...] | None = None,
    ):
        super().__init__()
        layers, width = NETWORKS[arch], hidden_dims[-1]
        self.z1 = nn.Sequential(*layers.hidden_layer(z1_dim, width))
        self.z2 = nn.Sequential(*layers.hidden_layer(z2_dim, width))
        self.joint = layers.writing([2 * width, *list(reversed(hidden_dims))[1:], x_dim], image_shape)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        z1, z2 = torch.broadcast_tensors(self.z1(z1), self.z2(z2))  # (..., width) each
        return self.joint(torch.cat([z1, z2], dim=-1))  # (..., x_dim)


class Decoder(nn.Module):
    """``z -> logits`` of the pixels: the parameters of ``p(x | z)``."""

    def __init__(
        self,
        z_dim: int,
        hidden_dims: Sequence[int],
        x_dim: int,
        arch: str = "mlp",
        image_shape: tuple[int, ...] | None = None,
    ):
        super().__init__()
        self.net = NETWORKS[arch].writing([z_dim, *reversed(hidden_dims), x_dim], image_shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (..., x_dim)
