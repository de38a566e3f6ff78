"""Run by ``torchrun`` from tests/test_distributed.py: one DDP training step per setting, through the
library's own ``train_epoch``; rank 0 saves the gradient and the parameters after each step to
``OUT/<setting>.pt``.

    torchrun --standalone --nproc_per_node 2 tests/ddp_step.py OUT
"""

import sys
from pathlib import Path

import pyro
import torch
from torch import nn

from pyrovae import distributed
from pyrovae.config import ModelConfig
from pyrovae.data import synthetic_dataset
from pyrovae.likelihoods import binarize
from pyrovae.model import VAE
from pyrovae.train import adam, elbo_loss, train_epoch

SEED = 3
# (objective, particles, architecture, guide, global batch)
SETTINGS = [
    ("trace", 1, "mlp", "gaussian", 16),
    ("iwae-dreg", 3, "gated", "gaussian", 15),
    ("trace", 2, "conv", "iaf", 16),
]
X = synthetic_dataset(num_train=16, num_test=1).x_train


def build(objective: str, k: int, arch: str, guide: str) -> tuple[VAE, nn.Module, torch.optim.Optimizer]:
    pyro.set_rng_seed(SEED)
    vae = VAE(ModelConfig(z_dim=4, hidden_dims=(32,), arch=arch, guide=guide))
    loss_fn = elbo_loss(vae, objective, k)
    return vae, loss_fn, adam(loss_fn.parameters(), 1e-2)


def main(out: Path) -> None:
    pyro.settings.set(module_local_params=True)
    with distributed.process_group(torch.device("cpu")) as group:
        for objective, k, arch, guide, batch in SETTINGS:
            vae, loss_fn, optimizer = build(objective, k, arch, guide)
            ddp = nn.parallel.DistributedDataParallel(loss_fn)
            if group.rank > 0:  # as the Trainer: rank 0 goes on with the single process's stream
                pyro.set_rng_seed(distributed.rank_seed(SEED, group.rank))
            train_epoch(ddp, optimizer, X[:batch], batch, prepare=binarize, group=group)
            del ddp  # DDP's reducer goes before the process group does
            if group.is_main:  # the gradient the step took (Adam's first step alone hides its scale)
                grads = {name: p.grad for name, p in vae.named_parameters()}
                torch.save(
                    {"params": vae.state_dict(), "grads": grads}, out / f"{objective}-{k}-{arch}-{guide}.pt"
                )
        distributed.barrier(group)  # no rank leaves while another is still at work


if __name__ == "__main__":
    main(Path(sys.argv[1]))
