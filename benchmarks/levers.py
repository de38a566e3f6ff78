"""Benchmark: the single operations behind this round's speed levers, timed in isolation on one batch.

    python benchmarks/levers.py

(0) taking a batch of 128 rows from 60,000 x 784 uint8 pixels: ``x[idx]`` against ``x.index_select(0, idx)``
(pyrovae's);
(1) binarizing a batch of 128 x 784 uint8 pixels: ``torch.bernoulli`` against ``u < p`` (``u`` uniform on
[0, 1), the first rounds') and ``r < x`` (``r`` uniform on the integers 0..254, pyrovae's now);
(2) torch's element-wise ``log1p``, ``log_sigmoid``, ``sigmoid`` and ``log`` on a batch of 128 x 784 values;
the Bernoulli log-density of a batch, forward alone and forward and backward, at K = 1 and 5
particles: a dot product with ``logaddexp`` (the first round's), torch's fused binary cross-entropy (the
second's) and one autograd node through sigmoid and log (pyrovae's now);
(3) the evaluation's score of 500 particles x 100 images x 784 pixels (no gradient): torch's binary
cross-entropy, eager, against kernels fused by ``torch.compile`` with softplus through ``logaddexp``
(before) and through ``log(1 + e^-|l|)`` (pyrovae's ``compiled_log_prob`` now);
(4) the mixture priors' log p(z) (the VampPrior's 500 components, z = 40): torch's ``exp`` on 100 x 500
values near 0 and near -90 (below float32's normal range, where the CPU leaves its vectorized exp), then
Pyro's ``MixtureSameFamily`` of diagonal Normals against pyrovae's ``DiagonalNormalMixture``, forward and
backward on a training step's 100 draws, and forward alone on 5,000 draws (an evaluation chunk is 50,000:
MixtureSameFamily's (draws, K, D) tensors would be 4 GB each there), and whole training steps of the
VampPrior recipe's model (gated 2 x 300, batch 100) with each, alternated; and the growth of peak memory
(Linux's ``VmHWM``, a fresh process each) while scoring 100 images at K = 1000 with ``evaluate``'s chunks;
(5) whole training steps of the HVAE recipe's model (gated 2 x 300, z1 and z2 of 40, batch 100, in the
warm-up's KL weight) through Pyro's traces against the static path (``Model.log_weight_terms``), alternated;
(6) the IWAE recipe's training (tanh 2 x 200, z = 50, K = 50, batch 20) on real MNIST images from its first
step, twice from the same seed: keeping subnormal floats (torch's default) and flushing them to zero
(``fit``'s default, ``TrainConfig.flush_denormal``); each block's milliseconds a step, and the largest
difference between the two runs' losses. Needs ``--data-dir`` (MNIST in torchvision's layout).

    python benchmarks/levers.py --parts 4      # some parts (parts 0 and 1 run together)
    python benchmarks/levers.py --parts 6 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.distributions import BernoulliImage, DiagonalNormalMixture, _fused_bernoulli_log_prob


def per_call_ms(fn, repeats: int = 300) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=int, nargs="+", choices=range(7), default=list(range(7)))
    parser.add_argument("--repeats", type=int, default=5, help="Part 5's alternations (20 steps each).")
    parser.add_argument("--data-dir", default=None, help="MNIST for part 6 (without it, part 6 is skipped).")
    parser.add_argument("--blocks", type=int, default=6, help="Part 6's blocks of 100 steps.")
    parser.add_argument("--peak-memory-of", choices=MIXTURES, help=argparse.SUPPRESS)  # the child
    parser.add_argument("--subnormals-child", choices=("keep", "flush"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subnormals_child:
        return print(
            json.dumps(iwae_subnormals_child(args.subnormals_child == "flush", args.data_dir, args.blocks))
        )
    if args.peak_memory_of:
        return print(evaluation_peak_growth_gb(args.peak_memory_of == "MixtureSameFamily"))
    parts = set(args.parts)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; milliseconds per call")
    if parts & {0, 1}:
        batches()
    if parts & {2, 3}:
        bernoulli_densities(parts)
    if 4 in parts:
        mixtures()
    if 5 in parts:
        hvae_paths(repeats=args.repeats)
    if 6 in parts:
        if args.data_dir is None:
            print("  part 6 skipped: it needs --data-dir (MNIST)")
        else:
            iwae_subnormals(args.data_dir, args.blocks)


def batches() -> None:
    pixels = torch.randint(0, 256, (128, 784), dtype=torch.uint8)
    x_all, idx = torch.randint(0, 256, (60000, 784), dtype=torch.uint8), torch.randperm(60000)[:128]
    fancy = per_call_ms(lambda: x_all[idx])
    select = per_call_ms(lambda: x_all.index_select(0, idx))
    print(f"  batch of 128 rows: x[idx] {fancy:.3f}, index_select {select:.3f}")
    bernoulli = per_call_ms(lambda: torch.bernoulli(pixels.float().div_(255)))
    threshold = per_call_ms(lambda: (torch.rand(pixels.shape) < pixels.float().div_(255)).float())
    integer = per_call_ms(lambda: (torch.empty_like(pixels).random_(0, 255) < pixels).float())
    print(f"  binarize 128 x 784: bernoulli {bernoulli:.3f}, u < p {threshold:.3f}, r < x {integer:.3f}")


def bernoulli_densities(parts: set[int]) -> None:
    x = torch.bernoulli(torch.full((128, 784), 0.3))
    u = torch.rand(128, 784) + 0.5
    if 2 not in parts:
        return score(x)
    elementwise = {name: per_call_ms(lambda f=f: f(u)) for name, f in ELEMENTWISE.items()}
    print("  element-wise on 128 x 784: " + ", ".join(f"{n} {t:.3f}" for n, t in elementwise.items()))
    densities = {"dot + logaddexp": dot_logaddexp, "fused BCE": fused_bce, "pyrovae's node": pyrovae_node}
    for k in (1, 5):
        logits = torch.randn(k, 128, 784, requires_grad=True)
        for name, fn in densities.items():
            with torch.no_grad():
                forward = per_call_ms(lambda f=fn, lg=logits: f(lg, x), 100)
            both = per_call_ms(lambda f=fn, lg=logits: f(lg, x).sum().backward(), 100)
            print(f"  Bernoulli log-density, K = {k}, {name}: forward {forward:.3f}, "
                  f"forward + backward {both:.3f}")  # fmt: skip
    if 3 in parts:
        score(x)


def score(x: torch.Tensor) -> None:
    logits, x = torch.randn(500, 100, 784) * 4, x[:100]
    with torch.no_grad():
        scores = {
            "eager BCE": fused_bce,
            "compiled logaddexp": torch.compile(compiled_logaddexp, dynamic=True),
            "compiled log(1 + e^-|l|)": torch.compile(_fused_bernoulli_log_prob, dynamic=True),
        }
        times = {name: per_call_ms(lambda f=f: f(logits, x), 10) for name, f in scores.items()}
    print("  score of 500 x 100 x 784 logits: " + ", ".join(f"{n} {t:.1f}" for n, t in times.items()))


def mixtures(k: int = 500, d: int = 40) -> None:
    for name, shift in (("near 0", 0.0), ("near -90", -90.0)):
        values = torch.randn(100, k) + shift
        print(f"  exp of 100 x {k} values {name}: {per_call_ms(lambda v=values: torch.exp(v)):.3f}")
    logits, loc = torch.zeros(k), torch.randn(k, d, requires_grad=True)
    scale = (0.1 + torch.rand(k, d)).requires_grad_()
    mixtures = {
        "MixtureSameFamily": lambda: dist.MixtureSameFamily(
            dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
        ),
        "DiagonalNormalMixture": lambda: DiagonalNormalMixture(logits, loc, scale),
    }
    z = torch.randn(100, d, requires_grad=True)
    z_chunk = torch.randn(5000, d)
    for name, prior in mixtures.items():
        both = per_call_ms(lambda p=prior: p().log_prob(z).sum().backward(), 50)
        with torch.no_grad():
            forward = per_call_ms(lambda p=prior: p().log_prob(z_chunk), 5)
        print(f"  log p(z), {k} components, z = {d}, {name}: 100 draws forward + backward "
              f"{both:.3f}; 5,000 draws forward {forward:.1f}")  # fmt: skip
    steps = {name: [] for name in mixtures}
    for _ in range(3):
        for name in mixtures:
            steps[name].append(vamp_step_ms(name == "MixtureSameFamily"))
    print("  VampPrior training step (best of 3 x 20 steps): "
          + ", ".join(f"{n} {min(t):.1f}" for n, t in steps.items()))  # fmt: skip
    for name in MIXTURES:
        child = [sys.executable, __file__, "--peak-memory-of", name]
        grown = subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip()
        print(f"  peak memory grown scoring 100 images at K = 1000, {name}: {float(grown):.2f} GiB")


MIXTURES = ("MixtureSameFamily", "DiagonalNormalMixture")


def vamp_model():
    from pyrovae.config import ModelConfig
    from pyrovae.model import VAE

    config = ModelConfig(z_dim=40, hidden_dims=(300, 300), arch="gated", prior="vamp", num_components=500)
    return VAE(config)


def torch_mixture_patch(enabled: bool):
    """Within this context (if ``enabled``), pyrovae's priors build Pyro's ``MixtureSameFamily``."""
    from unittest import mock

    from pyrovae import priors

    def mixture_same_family(logits, loc, scale):
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1))

    patch = mock.patch.object(priors, "DiagonalNormalMixture", mixture_same_family)
    return patch if enabled else contextlib.nullcontext()


def evaluation_peak_growth_gb(torch_mixture: bool) -> float:
    from pyrovae.config import EvalConfig
    from pyrovae.importance import importance_estimate

    vae, config = vamp_model(), EvalConfig()
    x = torch.bernoulli(torch.full((100, 784), 0.3))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: the peak resident size (VmHWM) starts again from the current one
    before = _status_kib("VmRSS")
    with torch_mixture_patch(torch_mixture):
        importance_estimate(vae.model, vae.guide, x, 1000, config.chunk_size, config.batch_size)
    return (_status_kib("VmHWM") - before) / 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def recipe_step(vae):
    """``(loss module, step)``: one SVI step of a recipe's model on a batch of 100 images, at the
    warm-up's KL weight 0.5, Pyro's validation off (as on all but an epoch's first step)."""
    import pyro

    from pyrovae.objectives import KLWeight
    from pyrovae.train import adam, elbo_loss

    loss_fn = elbo_loss(vae)
    optimizer = adam(loss_fn.parameters(), 5e-4)
    x = torch.bernoulli(torch.full((100, 784), 0.3))
    kl_weight = KLWeight(0.5)

    def step():
        with pyro.validation_enabled(False), kl_weight:
            loss = loss_fn(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return loss_fn, step


def vamp_step_ms(torch_mixture: bool) -> float:
    """One SVI step of the VampPrior recipe's model, its prior as pyrovae's or as MixtureSameFamily."""
    import pyro

    pyro.set_rng_seed(0)
    _, step = recipe_step(vamp_model())
    with torch_mixture_patch(torch_mixture):
        return per_call_ms(step, 20)


def hvae_paths(repeats: int, steps: int = 20) -> None:
    """Training steps of the HVAE recipe's model through Pyro's traces and through the static path, the
    two alternated (a b, then b a) ``repeats`` times; the median of each and of the pairs' ratios."""
    import statistics

    import pyro

    from pyrovae.config import ModelConfig
    from pyrovae.model import VAE

    pyro.set_rng_seed(0)
    config = ModelConfig(z_dim=40, hidden_dims=(300, 300), arch="gated", family="hvae")
    loss_fn, step = recipe_step(VAE(config))
    assert loss_fn.static, "the HVAE should take the static path"

    def timed(static: bool) -> float:
        loss_fn.static = static
        return per_call_ms(step, steps)

    times = {True: [], False: []}
    for i in range(repeats):
        for static in (False, True) if i % 2 == 0 else (True, False):
            times[static].append(timed(static))
    ratios = [p / s for p, s in zip(times[False], times[True], strict=True)]
    print(f"  HVAE training step ({repeats} x {steps} steps, medians): Pyro's traces "
          f"{statistics.median(times[False]):.1f}, static path {statistics.median(times[True]):.1f}; "
          f"ratio {statistics.median(ratios):.3f} (pairs {min(ratios):.3f}-{max(ratios):.3f})")  # fmt: skip
    loss_fn.static = True


def iwae_subnormals(data_dir: str, blocks: int) -> None:
    """The IWAE recipe's training from its first step, keeping subnormals and flushing them, from the same
    seed, each in a fresh process (the setting reaches torch's worker threads only as they start)."""
    runs = {}
    for mode in ("keep", "flush"):
        command = [sys.executable, __file__, "--subnormals-child", mode, "--data-dir", data_dir]
        out = subprocess.run([*command, "--blocks", str(blocks)], capture_output=True, text=True, check=True)
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        name = "flushed to zero (fit's default)" if mode == "flush" else "kept (torch's default)"
        ms = ", ".join(f"{t:.1f}" for t in runs[mode]["ms"])
        print(f"  IWAE recipe, subnormals {name}: ms a step, by blocks of 100 steps: {ms}")
    pairs = zip(runs["keep"]["losses"], runs["flush"]["losses"], strict=True)
    gap = max(abs(a - b) for a, b in pairs)
    print(f"  largest difference between the two runs' losses (nats an image): {gap:.2e}")


def iwae_subnormals_child(flush: bool, data_dir: str, blocks: int, steps: int = 100) -> dict:
    import pyro

    from pyrovae.config import ModelConfig
    from pyrovae.data import load_dataset
    from pyrovae.likelihoods import binarize
    from pyrovae.model import VAE
    from pyrovae.train import adam, elbo_loss

    torch.set_flush_denormal(flush)  # first: before any worker thread starts (as fit does)
    x = load_dataset("mnist", data_dir).x_train[: 20 * steps * blocks]
    pyro.set_rng_seed(0)
    loss_fn = elbo_loss(VAE(ModelConfig(z_dim=50, hidden_dims=(200, 200), arch="tanh")), "iwae", 50)
    optimizer = adam(loss_fn.parameters(), 1e-3, 1e-4)
    losses, ms = [], []
    with pyro.validation_enabled(False):
        for block in x.split(20 * steps):
            start = time.perf_counter()
            for batch in block.split(20):
                loss = loss_fn(binarize(batch))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item() / 20)
            ms.append((time.perf_counter() - start) / steps * 1e3)
    return {"ms": ms, "losses": losses}


# log1p (inside log_sigmoid, softplus and so the fused binary cross-entropy) against what pyrovae uses.
ELEMENTWISE = {"log1p": torch.log1p, "log_sigmoid": F.logsigmoid, "sigmoid": torch.sigmoid, "log": torch.log}


def dot_logaddexp(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vecdot(logits, x) - torch.logaddexp(logits, logits.new_zeros(())).sum(-1)


def compiled_logaddexp(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (logits * x - torch.logaddexp(logits, logits.new_zeros(()))).sum(-1)


def pyrovae_node(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return BernoulliImage(logits=logits, validate_args=False).log_prob(x)


def fused_bce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


if __name__ == "__main__":
    main()
