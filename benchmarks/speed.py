"""Benchmark: pyrovae's training epoch against the fastest hand-written PyTorch loop, side by side in one run.

(a) pyrovae: what ``fit`` runs (the objective's module, ``train_epoch``, fused Adam), on uint8 data;
(b) by hand: written as a notebook writes it, with nothing of pyrovae's: its own encoder and decoder
    modules (same sizes, same initial weights), pixels as floats once, ``u < p`` binarization per batch,
    the closed-form KL, Adam (fused, as fast as torch has it; ``--notebook`` gives the notebook's own
    ``torch.bernoulli`` and plain Adam instead).

For each setting (the default ELBO; ``--num-particles`` K samples per image, the notebooks'
``n_samples_per_z``; IWAE at the same K) (a) and (b) run in pairs, a b then b a, after a warm-up epoch
each; the medians, the median of the pairs' ratios (the figure to read on a shared machine whose speed
drifts by tens of percent within minutes) and their spread are printed. ``--parts`` then times each part of
pyrovae's step (data, guide trace, model replay, log-densities, backward, optimizer; the static path) and
the per-epoch test ELBO, so any overhead is located, not guessed. ``--arch conv`` times both loops with
the convolutional networks instead (``HandConvVAE``).

    python benchmarks/speed.py --data-dir ../shared/data --repeats 5 --parts
    python benchmarks/speed.py --data-dir ../shared/data --repeats 3 --arch conv --settings trace:1
"""

from __future__ import annotations

import copy
import math
import statistics
import time

import click
import pyro
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.data import binarize_fixed, load_dataset
from pyrovae.importance import importance_estimate
from pyrovae.likelihoods import binarize
from pyrovae.model import VAE
from pyrovae.train import adam, elbo_loss, evaluate_elbo, resolve_device, train_epoch


class HandVAE(nn.Module):
    """The notebook's VAE: 784-400-20 MLPs, ReLU, softplus scale; weights copied from pyrovae's for a
    like-for-like start."""

    def __init__(self, vae: VAE):
        super().__init__()
        enc, dec = vae.guide.encoder.net, vae.model.decoder.net
        self.fc1, self.fc2 = copy.deepcopy(enc[0]), copy.deepcopy(enc[2])
        self.fc3, self.fc4 = copy.deepcopy(dec[0]), copy.deepcopy(dec[2])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))  # (N, 2 z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc4(F.relu(self.fc3(z)))  # (K, N, D)

    def loss(self, x: torch.Tensor, k: int, iwae: bool) -> torch.Tensor:
        loc, raw = self.encode(x).chunk(2, -1)
        scale = F.softplus(raw) + 1e-4
        eps = torch.randn((k, *loc.shape))  # (K, N, z)
        z = loc + scale * eps
        logits = self.decode(z)  # (K, N, D)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        if not iwae:
            kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
            return -(log_px_z.mean(0) - kl).sum()
        log_w = log_px_z - 0.5 * (z**2).sum(-1) + 0.5 * (eps**2).sum(-1) + scale.log().sum(-1)
        return -(log_w.logsumexp(0) - math.log(k)).sum()


class HandConvVAE(HandVAE):
    """The same with the convolutional networks (``--arch conv``): 4x4 stride-2 convolutions (32, 64
    channels) and a 400-unit linear layer, mirrored by transposed convolutions; plain torch layers,
    weights copied from pyrovae's."""

    def __init__(self, vae: VAE):
        nn.Module.__init__(self)
        reader, head = vae.guide.encoder.net[0], vae.guide.encoder.net[1]
        writer = vae.model.decoder.net[0]
        self.shape, self.grid = reader.shape, writer.grid
        self.convs, self.fc1, self.fc2 = (
            copy.deepcopy(reader.convs),
            copy.deepcopy(reader.out[0]),
            copy.deepcopy(head),
        )
        self.dense, self.deconvs = copy.deepcopy(writer.dense), copy.deepcopy(writer.deconvs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.convs(x.reshape(-1, *self.shape)))))  # (N, 2 z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.dense(z).reshape(-1, *self.grid)).reshape(*z.shape[:-1], -1)  # (K, N, D)


HAND = {"mlp": HandVAE, "conv": HandConvVAE}


def hand_epoch(model: HandVAE, optimizer, x_float: torch.Tensor, batch_size: int, k: int, iwae: bool,
               notebook: bool) -> float:  # fmt: skip
    total = 0.0
    for idx in torch.randperm(len(x_float)).split(batch_size):
        p = x_float[idx]
        x = torch.bernoulli(p) if notebook else (torch.rand_like(p) < p).float()
        loss = model.loss(x, k, iwae)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return float(total)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(data, setting: str, k: int, batch_size: int, repeats: int, notebook: bool, arch: str = "mlp"
            ) -> dict[str, list]:  # fmt: skip
    """Alternate (a) and (b) for one setting; returns their epoch times after a warm-up epoch each."""
    pyro.set_rng_seed(0)
    vae = VAE(ModelConfig(image_shape=data.image_shape, arch=arch))
    hand = HAND[arch](vae)
    loss_fn = elbo_loss(vae, setting, k)
    optimizer = adam(loss_fn.parameters(), 1e-3)
    hand_opt = torch.optim.Adam(hand.parameters(), lr=1e-3, fused=not notebook)
    x_float = data.x_train.float() / 255  # the notebook's data preparation, once
    times: dict[str, list] = {"pyrovae": [], "hand": []}
    iwae = setting == "iwae"
    epochs = {
        "pyrovae": lambda: float(train_epoch(loss_fn, optimizer, data.x_train, batch_size)),
        "hand": lambda: hand_epoch(hand, hand_opt, x_float, batch_size, k, iwae, notebook),
    }
    for repeat in range(repeats + 1):
        seconds = {}
        # Pairs in the order a b, b a, a b, ...: a machine that drifts faster or slower favours neither.
        for name in ("pyrovae", "hand") if repeat % 2 == 0 else ("hand", "pyrovae"):
            pyro.set_rng_seed(repeat)
            seconds[name] = _timed(epochs[name])
        a, b = seconds["pyrovae"], seconds["hand"]
        if repeat > 0:
            times["pyrovae"].append(a)
            times["hand"].append(b)
    return times


def parts(data, batch_size: int, steps: int) -> None:
    """Mean milliseconds per step of each part of pyrovae's default step, Pyro's path and the static one."""
    pyro.set_rng_seed(0)
    vae = VAE(ModelConfig(image_shape=data.image_shape))
    loss_fn = elbo_loss(vae)
    optimizer = adam(loss_fn.parameters(), 1e-3)
    model, guide = vae.model, vae.guide
    clock: dict[str, float] = {}

    def tick(name, start):
        clock[name] = clock.get(name, 0.0) + time.perf_counter() - start
        return time.perf_counter()

    batches = torch.randperm(len(data.x_train)).split(batch_size)[:steps]
    with pyro.validation_enabled(False):
        for idx in batches:
            t = time.perf_counter()
            x = binarize(data.x_train[idx])
            t = tick("data: index, binarize", t)
            guide_trace = poutine.trace(guide).get_trace(x)
            t = tick("pyro: guide trace (encoder, draw)", t)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
            t = tick("pyro: model replay (decoder)", t)
            loss = -(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
            t = tick("pyro: log-densities", t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t = tick("backward", t)
            optimizer.step()
            t = tick("optimizer (fused Adam)", t)
            loss_fn(x)
            t = tick("whole Trace_ELBO forward, Pyro's path", t)
            log_px_z, latent = model.log_weight_terms(guide, x)
            (-(log_px_z + latent).sum()).detach()
            tick("whole forward, static path", t)
    for name, seconds in clock.items():
        print(f"    {name:40s} {1e3 * seconds / len(batches):7.3f} ms")
    x_test = binarize_fixed(data.x_test)
    seconds = _timed(lambda: evaluate_elbo(loss_fn, x_test, TrainConfig.eval_batch_size))
    batch = TrainConfig.eval_batch_size
    print(f"    per-epoch test ELBO ({len(x_test)} images, batch {batch}): {seconds:.3f} s")


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size)
@click.option("--repeats", type=click.IntRange(min=1), default=5)
@click.option("--num-particles", type=click.IntRange(min=2), default=5)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu")
@click.option(
    "--notebook", is_flag=True, help="The hand loop as the notebook writes it: bernoulli, plain Adam."
)
@click.option("--parts", "show_parts", is_flag=True, help="Also time each part of pyrovae's step.")
@click.option("--is-points", type=click.IntRange(min=0), default=0, help="Images for the log p(x) rate.")
@click.option("--is-samples", type=click.IntRange(min=1), default=5000)
@click.option("--arch", type=click.Choice(sorted(HAND)), default="mlp", help="The networks of both loops.")
@click.option(
    "--settings",
    default="trace:1,trace:K,iwae:K",
    help="Objective:particles pairs to time, K meaning --num-particles.",
)
def main(dataset, data_dir, batch_size, repeats, num_particles, device, notebook, show_parts, is_points,
         is_samples, arch, settings):  # fmt: skip
    device = resolve_device(device)
    if device.type != "cpu":
        raise click.UsageError("the hand-written loops run on the CPU; no GPU was measured")
    pyro.settings.set(module_local_params=True)  # as fit runs
    data = load_dataset(dataset, data_dir)
    hand = "notebook's (torch.bernoulli, plain Adam)" if notebook else "fastest (u < p, fused Adam)"
    print(
        f"{dataset}: {len(data.x_train)} images an epoch, batch {batch_size}, CPU "
        f"({torch.get_num_threads()} threads), torch {torch.__version__}, pyro {pyro.__version__}; "
        f"{repeats} repeats after a warm-up epoch; hand loop: {hand}; networks: {arch}"
    )
    print("| setting | pyrovae epoch (s) | hand-written epoch (s) | median ratio of pairs | each pair |")
    print("| --- | --- | --- | --- | --- |")
    pairs = [pair.split(":") for pair in settings.split(",")]
    for setting, k in [(name, num_particles if k == "K" else int(k)) for name, k in pairs]:
        times = compare(data, setting, k, batch_size, repeats, notebook, arch)
        a, b = times["pyrovae"], times["hand"]
        each = [round(x / y, 3) for x, y in zip(a, b, strict=True)]
        print(
            f"| {setting}, K = {k} | {statistics.median(a):.3f} ({min(a):.2f}-{max(a):.2f}) | "
            f"{statistics.median(b):.3f} ({min(b):.2f}-{max(b):.2f}) | "
            f"**{statistics.median(each):.3f}** | {min(each)}-{max(each)} |",
            flush=True,
        )
    if show_parts:
        print("  pyrovae's default step, by part (validation off, as on every step but an epoch's first):")
        parts(data, batch_size, steps=200)
    if is_points:
        vae = VAE(ModelConfig(image_shape=data.image_shape))
        x = binarize_fixed(data.x_test[:is_points])
        importance_estimate(vae.model, vae.guide, x[:10], num_samples=500)  # warm-up
        seconds = _timed(lambda: importance_estimate(vae.model, vae.guide, x, num_samples=is_samples))
        rate = is_points * is_samples / seconds
        print(f"  log p(x): {is_points} images x K = {is_samples} in {seconds:.2f} s = {rate:,.0f} samples/s")


if __name__ == "__main__":
    main()
