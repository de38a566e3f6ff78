"""pyrovae.optim.Adam against torch.optim.Adam(fused=True): the same parameters bit for bit, state dicts
that load into either, and no torch._dynamo at start-up."""

import json
import subprocess
import sys

import pytest
import torch

from pyrovae.config import ModelConfig
from pyrovae.model import VAE
from pyrovae.optim import SCHEDULES, Adam, Burda
from pyrovae.train import adam, elbo_loss
from tests.conftest import invoke


def _losses(seed: int, steps: int):
    """A small VAE's loss on fixed random batches; the decoder's last bias gets no gradient at odd
    steps (a parameter left out of a step, whose state must not move)."""
    torch.manual_seed(seed)
    vae = VAE(ModelConfig(z_dim=3, hidden_dims=(8,)))
    loss_fn = elbo_loss(vae)
    batches = [(torch.rand(5, 784) < 0.3).float() for _ in range(steps)]
    return loss_fn, batches


def _train(make_optimizer, steps: int = 12, switch_at: int | None = None, switch_to=None):
    loss_fn, batches = _losses(0, steps)
    params = list(loss_fn.parameters())
    optimizer = make_optimizer(params)
    torch.manual_seed(1)
    for t, x in enumerate(batches):
        if t == switch_at:
            state = optimizer.state_dict()
            optimizer = switch_to(params)
            optimizer.load_state_dict(state)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(x).backward()
        if t % 2:
            params[-1].grad = None
        optimizer.step()
    return [p.detach().clone() for p in params], optimizer.state_dict()


def torch_adam(params):
    return torch.optim.Adam(params, lr=1e-2, fused=True)


def ours(params):
    return Adam(params, lr=1e-2)


def test_the_same_parameters_and_state_bit_for_bit():
    theirs, their_state = _train(torch_adam)
    mine, my_state = _train(ours)
    for a, b in zip(theirs, mine, strict=True):
        assert torch.equal(a, b)
    assert their_state["state"].keys() == my_state["state"].keys()
    for i, s in their_state["state"].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(s[name], my_state["state"][i][name]), (i, name)
    assert {k: v for k, v in their_state["param_groups"][0].items() if k in my_state["param_groups"][0]} == (
        my_state["param_groups"][0]
    )


def test_state_dicts_load_into_either_class():
    reference, _ = _train(ours)
    for first, second in ((torch_adam, ours), (ours, torch_adam)):
        resumed, _ = _train(first, switch_at=5, switch_to=second)
        for a, b in zip(reference, resumed, strict=True):
            assert torch.equal(a, b)


def test_adam_prefers_the_fused_kernel_and_zero_grad_keeps_or_drops():
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = adam([p], 1e-3)
    assert isinstance(optimizer, Adam)
    p.grad = torch.ones(3)
    optimizer.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(3))
    optimizer.zero_grad()
    assert p.grad is None


def test_fitting_imports_neither_dynamo_nor_sympy(tmp_path):
    # Two training steps and a checkpoint, in a fresh interpreter: torch.optim would import torch._dynamo,
    # torch.broadcast_shapes sympy (pyrovae.distributions.broadcast_shape), 0.5-1.6 s each.
    code = (
        "import sys, torch\n"
        "from pyrovae.config import ModelConfig\n"
        "from pyrovae.model import VAE\n"
        "from pyrovae.train import adam, elbo_loss, train_epoch\n"
        "loss_fn = elbo_loss(VAE(ModelConfig(z_dim=2, hidden_dims=(4,))))\n"
        "optimizer = adam(loss_fn.parameters(), 1e-3)\n"
        "train_epoch(loss_fn, optimizer, torch.randint(0, 256, (8, 784), dtype=torch.uint8), 4)\n"
        "torch.save(optimizer.state_dict(), sys.argv[1])\n"
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "adam.pt")], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False False"
    state = torch.load(tmp_path / "adam.pt", weights_only=True)
    assert state["state"][0]["step"].item() == 2


def test_burda_schedule_is_the_iwae_papers():
    # Stage i runs 3^i epochs at 10^(-i/7): its last epoch is 3^0 + ... + 3^i.
    ends = [sum(3**j for j in range(i + 1)) for i in range(8)]
    assert ends[-1] == 3280
    for i, end in enumerate(ends):
        assert Burda.stage(end) == i and Burda.stage(end + 1) == min(i + 1, 7)
        assert Burda.factor(end) == pytest.approx(10 ** (-i / 7), rel=1e-12)
    assert SCHEDULES["constant"].factor(5000) == 1.0 and Burda.stage(10**6) == 7


def test_fit_sets_each_epochs_rate_and_adams_epsilon(tmp_path):
    out = tmp_path / "run"
    tiny = ["--dataset", "synthetic", "--batch-size", "50", "--z-dim", "2", "--hidden-dims", "8"]
    schedule = ["--lr-schedule", "burda", "--adam-eps", "1e-4"]
    result = invoke("fit", *tiny, "--epochs", "2", *schedule, "--out", str(out))
    assert result.exit_code == 0, result.output
    group = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-3 * 10 ** (-1 / 7), rel=1e-12) and group["eps"] == 1e-4
    config = json.loads((out / "config.json").read_text())
    assert config["lr_schedule"] == "burda" and config["adam_eps"] == 1e-4
