"""Benchmark: the guide's gradient under IWAE and IWAE-DReG, their variance and signal-to-noise ratio.

On a trained run, for each K, draws the encoder's gradient of the K-sample bound ``--draws`` times on the
same images (``--num-points`` of the fixed test set) with each estimator, and prints the total variance
over the encoder's parameters, the mean signal-to-noise ratio ``|mean| / sd`` per parameter, and DReG's
variance over IWAE's (Tucker et al., 2019; Rainforth et al., 2018: IWAE's guide SNR falls as K grows).

    python benchmarks/gradient_variance.py --run-dir RUN --num-points 10 --draws 100
"""

from __future__ import annotations

import click
import pyro
import torch

from pyrovae.data import fixed_representation, load_dataset
from pyrovae.objectives import IWAE, IWAEDReG
from pyrovae.runs import load_run


def guide_gradients(elbo, vae, x, draws: int) -> torch.Tensor:
    """(draws, P): the flattened gradient of the encoder's parameters, one row a draw."""
    params = list(vae.guide.parameters())
    rows = []
    for _ in range(draws):
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


@click.command()
@click.option("--run-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data-dir", default=None)
@click.option("--num-points", type=click.IntRange(min=1), default=10)
@click.option("--draws", type=click.IntRange(min=2), default=100)
@click.option("--ks", default="5,50", help="Comma-separated numbers of particles.")
def main(run_dir, data_dir, num_points, draws, ks):
    vae, config, _ = load_run(run_dir)
    vae.train()
    data = load_dataset(config.dataset, data_dir or config.data_dir, config.test_fraction)
    x = fixed_representation(data.x_test[:num_points], vae.model.p_x.data)
    print(f"{run_dir}: encoder gradient over {num_points} test images, {draws} draws per estimator")
    print("| K | IWAE total variance | DReG total variance | DReG / IWAE | IWAE mean SNR | DReG mean SNR |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k in (int(v) for v in ks.split(",")):
        stats = {}
        for name, cls in (("iwae", IWAE), ("dreg", IWAEDReG)):
            pyro.set_rng_seed(k)
            g = guide_gradients(cls(num_particles=k, max_plate_nesting=1), vae, x, draws)
            sd = g.std(0)
            snr = (g.mean(0).abs() / sd.clamp(min=1e-12))[sd > 0].mean()
            stats[name] = (g.var(0).sum().item(), snr.item())
        ratio = stats["dreg"][0] / stats["iwae"][0]
        print(f"| {k} | {stats['iwae'][0]:.4g} | {stats['dreg'][0]:.4g} | **{ratio:.3f}** | "
              f"{stats['iwae'][1]:.3f} | {stats['dreg'][1]:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
