"""A VAE written by hand, as a notebook writes it, with nothing of pyrovae's: the yardstick that
``benchmarks/commands.py`` runs beside ``cli.py fit``.

784-400-20 MLPs with ReLU, softplus scale, Bernoulli pixels binarized afresh every batch, the closed-form
KL, Adam at 1e-3, batch 128; the images read with torchvision and turned into floats once. By default
it is the fastest honest loop (``u < p`` binarization, fused Adam); ``--notebook`` gives it the
notebooks' ``torch.bernoulli`` and plain Adam. Prints one line per epoch: ``epoch <n> <seconds> train ELBO
<nats>``, the seconds of the training pass alone, as ``fit``'s ``seconds`` column.

    python benchmarks/hand_vae.py --data-dir ../shared/data --dataset fashionmnist --epochs 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import datasets


class VAE(nn.Module):
    def __init__(self, x_dim: int = 784, hidden: int = 400, z_dim: int = 20):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(x_dim, hidden), nn.Linear(hidden, 2 * z_dim)
        self.fc3, self.fc4 = nn.Linear(z_dim, hidden), nn.Linear(hidden, x_dim)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The negative ELBO summed over the batch."""
        loc, raw = self.fc2(F.relu(self.fc1(x))).chunk(2, -1)
        scale = F.softplus(raw) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = self.fc4(F.relu(self.fc3(z)))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum()
        return bce + kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", choices=["mnist", "fashionmnist"], default="fashionmnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--notebook", action="store_true", help="torch.bernoulli and plain Adam")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cls = datasets.MNIST if args.dataset == "mnist" else datasets.FashionMNIST
    x_train = cls(args.data_dir, train=True).data.flatten(1).float() / 255  # once, as the notebook does
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=not args.notebook)
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        total = torch.zeros(())
        for idx in torch.randperm(len(x_train)).split(args.batch_size):
            p = x_train[idx]
            x = torch.bernoulli(p) if args.notebook else (torch.rand_like(p) < p).float()
            loss = model.loss(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        seconds = time.perf_counter() - start
        print(f"epoch {epoch} {seconds:.3f} train ELBO {-float(total) / len(x_train):.3f}", flush=True)


if __name__ == "__main__":
    main()
