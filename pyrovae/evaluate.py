"""Scoring a run: its ELBO and importance-sampled log p(x) on a split, in its likelihood's representation."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from tqdm.auto import tqdm

from . import distributed, io, memory
from .config import COMPILE_FROM, EvalConfig
from .data import fixed_representation, hold_out, load_dataset
from .errors import UserError
from .importance import importance_estimate
from .model import VAE
from .runs import load_run
from .train import resolve_device


def evaluation_files(split: str, num_points: int | None = None) -> tuple[str, str]:
    """The summary's and the per-image rows' file names for ``split``, or for its first
    ``num_points`` images: the whole test split's are ``evaluation.json`` and
    ``evaluation-images.csv``; another split's carry its name, and a score of the first N images
    ``-firstN`` (so neither a look at the validation split nor a quick look at a few images ever
    replaces the test set's figures)."""
    stem = "evaluation" if split == "test" else f"evaluation-{split}"
    if num_points is not None:
        stem += f"-first{num_points}"
    return f"{stem}.json", f"{stem}-images.csv"


# A latent dimension is active when the variance over the data of E_q[z_d | x] exceeds this (Burda et al.).
ACTIVE_UNIT_THRESHOLD = 0.01


def evaluate_run(run_dir: str | Path, config: EvalConfig | None = None) -> dict[str, Any] | None:
    """Score the run in ``run_dir`` and write ``evaluation.json`` there, with one row per scored image,
    in the split's order, in ``evaluation-images.csv`` (what a paired comparison of two runs reads;
    another split, or the first N images, go to other files: see :func:`evaluation_files`); returns
    what it wrote.

    Figures are means over the split's images, in nats per image: ``elbo`` and ``log_px`` come from
    the same K importance weights per image (their mean log, and the log of their mean), so
    ``log_px - elbo``, the mean ``KL(q(z|x) || p(z|x))``, is never negative. ``log_px_stderr`` is the
    Monte Carlo standard error of ``log_px``; ``log_px_stderr_images`` is its standard error as a
    mean over images drawn from the data distribution.

    Under torchrun each rank scores a contiguous share of the images with its own noise (rank 0 the
    single process's), rank 0 gathers the per-image results, writes, and returns them; the others
    return None.
    """
    config = config if config is not None else EvalConfig()
    run_dir = Path(run_dir)
    device = distributed.device_for(resolve_device(config.device), distributed.current())
    with distributed.process_group(device) as group:
        with distributed.together(group):
            vae, train_config, payload = load_run(run_dir, device, config.checkpoint)
            data_dir = config.data_dir if config.data_dir is not None else train_config.data_dir
            data = load_dataset(train_config.dataset, data_dir, train_config.test_fraction)
            split = data.x_test
            if config.split != "test":  # the run's own split of its training images, drawn again
                trained, held_out = hold_out(data, train_config.validation)
                split = held_out if config.split == "validation" else trained.x_train
            if len(split) == 0:
                raise UserError(
                    f"{run_dir} held out no validation images (fit --validation N holds some out)"
                )
            num_points = config.num_points
            if num_points is not None and num_points >= len(split):  # the whole split, and its files
                num_points = None
            if num_points is not None:
                split = split[:num_points]
            x = fixed_representation(split, vae.model.p_x.data).to(device)
            mine = group.share(x)
            if len(mine) == 0:
                raise UserError(f"{len(x)} images cannot be shared among {group.world_size} processes")
            needed = memory.evaluation_bytes(train_config.model, config, len(mine))
            memory.check_fits(needed, device, "this evaluation")
            summary_file, images_file = evaluation_files(config.split, num_points)
            if group.is_main:  # where the result goes, checked before the hours of scoring
                io.check_writable(run_dir / summary_file, run_dir / images_file)
        pyro.set_rng_seed(distributed.rank_seed(config.seed, group.rank))
        start = time.perf_counter()
        # On a terminal only (disable=None): a K = 5000 score of a test set takes minutes to an hour.
        with tqdm(total=len(mine), desc="log p(x)", unit="img", leave=False, file=sys.stderr,
                  disable=None if group.is_main else True) as bar:  # fmt: skip
            estimate = importance_estimate(
                vae.model,
                vae.guide,
                mine,
                config.num_samples,
                config.chunk_size,
                config.batch_size,
                config.compile if config.compile is not None else len(x) * config.num_samples >= COMPILE_FROM,
                progress=bar.update,
            )
        seconds = time.perf_counter() - start
        parts = distributed.gather(group, [t.cpu() for t in estimate])
    if not group.is_main:
        return None
    estimate = type(estimate)(*(torch.cat(columns).to(device) for columns in zip(*parts, strict=True)))
    units = posterior_usage(vae, x, config.batch_size)
    n, d = x.shape
    # Densities on dequantized pixels: log P(pixels) >= log p(y) - D log 256 (see pyrovae.likelihoods).
    offset = vae.model.p_x.log_px_offset()
    log_px = estimate.log_px.double() + offset
    result = {
        "dataset": train_config.dataset,
        "split": config.split,
        "held_out": train_config.validation,  # which images the validation and train splits are
        "num_points": n,
        "num_samples": config.num_samples,
        "likelihood": train_config.model.likelihood_name,
        "prior": train_config.model.prior,
        "checkpoint": config.checkpoint,
        "epoch": payload["epoch"],
        "data": vae.model.p_x.data_description,
        "elbo": estimate.elbo.double().mean().item() + offset,
        "log_px_offset": offset,
        "log_px": log_px.mean().item(),
        "log_px_stderr": (estimate.stderr.double() ** 2).sum().sqrt().item() / n,
        "log_px_stderr_images": (log_px.std().item() / math.sqrt(n)) if n > 1 else math.nan,
        "bits_per_dim": -log_px.mean().item() / (d * math.log(2)),
        "ess_mean": estimate.ess.double().mean().item(),
        **units,
        "seconds": seconds,
        "device": str(device),
    }
    result["kl_gap"] = result["log_px"] - result["elbo"]
    elbo = estimate.elbo.double() + offset
    per_image = zip(log_px.tolist(), elbo.tolist(), strict=True)
    rows = "".join(f"{i},{a!r},{b!r}\n" for i, (a, b) in enumerate(per_image))
    io.write_text(run_dir / images_file, "index,log_px,elbo\n" + rows)
    io.write_text(run_dir / summary_file, json.dumps(result, indent=2) + "\n")
    return result


@torch.no_grad()
def posterior_usage(vae: VAE, x: torch.Tensor, batch_size: int) -> dict[str, Any]:
    """Posterior collapse: ``active_units``, the dimensions of the top latent layer whose ``E_q[z_d | x]``
    varies over the data by more than 0.01 (Burda et al., 2015), and ``active_units_by_layer``, the
    same count for each layer (``{"z2": ..., "z1": ...}`` for the HVAE); ``kl_per_dim``, the mean over
    the data of the top layer's ``KL(q(z_d | x) || p(z_d))``, where both are diagonal Gaussians (None
    otherwise: a flow guide or a mixture prior has no per-dimension KL in closed form)."""
    generator = torch.Generator(device=x.device).manual_seed(0)  # the global stream is left as it was
    batches = [vae.guide.layer_locations(rows, generator) for rows in x.split(batch_size)]
    layers = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}  # (N, z_dim) each
    by_layer = {
        name: int((means.var(0) > ACTIVE_UNIT_THRESHOLD).sum()) if len(means) > 1 else 0
        for name, means in layers.items()
    }
    top, means = next(iter(layers.items()))
    prior = vae.model.prior()
    kl_per_dim = None
    if _diagonal_normal(prior):
        kls = []
        for rows in x.split(batch_size):
            q = vae.guide.posterior(rows)
            if not _diagonal_normal(q):
                break
            kls.append(torch.distributions.kl_divergence(q.base_dist, prior.base_dist).sum(0))
        else:
            kl_per_dim = (sum(kls) / len(x)).tolist()
    return {
        "active_units": by_layer[top],
        "active_units_by_layer": by_layer,
        "z_dim": means.shape[-1],
        "kl_per_dim": kl_per_dim,
    }


def _diagonal_normal(d) -> bool:
    return isinstance(d, dist.Independent) and isinstance(d.base_dist, dist.Normal)


def summary(result: dict[str, Any]) -> str:
    """The evaluation as a few lines for a terminal."""
    r = result
    layers = r.get("active_units_by_layer") or {}
    units = f"{r['active_units']:10d} of {r['z_dim']}"
    if len(layers) > 1:  # z_dim is each layer's size
        units = ", ".join(f"{n} of {r['z_dim']} in {name}" for name, n in layers.items())
    lines = [
        f"{r['dataset']} {r['split']} split: {r['num_points']} images as {r['data']}, "
        f"K = {r['num_samples']} importance samples each ({r['seconds']:.1f} s)",
        f"  ELBO                      {r['elbo']:10.3f} nats",
        f"  log p(x), IS estimate     {r['log_px']:10.3f} nats  (Monte Carlo s.e. {r['log_px_stderr']:.3f}; "
        f"s.e. over images {r['log_px_stderr_images']:.3f})",
        f"  gap, KL(q(z|x) || p(z|x)) {r['kl_gap']:10.3f} nats",
        f"  bits per dimension        {r['bits_per_dim']:10.4f}",
        f"  mean effective sample size {r['ess_mean']:9.1f} of {r['num_samples']}",
        f"  active units              {units} (Var E_q[z_d | x] > 0.01)",
    ]
    if r["log_px_offset"]:
        lines.append(
            f"  (both of the 8-bit pixels: the density values {r['log_px_offset']:+.1f}, i.e. - D log 256)"
        )
    return "\n".join(lines)
