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
(before) and through ``log(1 + e^-|l|)`` (pyrovae's ``compiled_log_prob`` now).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from pyrovae.distributions import BernoulliImage, _fused_bernoulli_log_prob


def per_call_ms(fn, repeats: int = 300) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (128, 784), dtype=torch.uint8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; milliseconds per call")
    x_all, idx = torch.randint(0, 256, (60000, 784), dtype=torch.uint8), torch.randperm(60000)[:128]
    fancy = per_call_ms(lambda: x_all[idx])
    select = per_call_ms(lambda: x_all.index_select(0, idx))
    print(f"  batch of 128 rows: x[idx] {fancy:.3f}, index_select {select:.3f}")
    bernoulli = per_call_ms(lambda: torch.bernoulli(pixels.float().div_(255)))
    threshold = per_call_ms(lambda: (torch.rand(pixels.shape) < pixels.float().div_(255)).float())
    integer = per_call_ms(lambda: (torch.empty_like(pixels).random_(0, 255) < pixels).float())
    print(f"  binarize 128 x 784: bernoulli {bernoulli:.3f}, u < p {threshold:.3f}, r < x {integer:.3f}")
    x = torch.bernoulli(torch.full((128, 784), 0.3))
    u = torch.rand(128, 784) + 0.5
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
    logits, x = torch.randn(500, 100, 784) * 4, x[:100]
    with torch.no_grad():
        scores = {
            "eager BCE": fused_bce,
            "compiled logaddexp": torch.compile(compiled_logaddexp, dynamic=True),
            "compiled log(1 + e^-|l|)": torch.compile(_fused_bernoulli_log_prob, dynamic=True),
        }
        times = {name: per_call_ms(lambda f=f: f(logits, x), 10) for name, f in scores.items()}
    print("  score of 500 x 100 x 784 logits: " + ", ".join(f"{n} {t:.1f}" for n, t in times.items()))


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
