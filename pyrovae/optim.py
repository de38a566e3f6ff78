"""Adam by torch's fused kernel, without ``torch.optim``'s start-up cost; learning-rate schedules.

Building any ``torch.optim`` optimizer imports ``torch._dynamo`` (its methods are wrapped to keep the
compiler out), 1.1-1.6 s of every ``fit``'s start-up on this project's CPU (``python
benchmarks/commands.py --only startup``). :class:`Adam` calls the kernel that
``torch.optim.Adam(fused=True)`` calls and keeps the same state under the same names, so its updates
are the same bit for bit and its ``state_dict`` loads into either class (``tests/test_optim.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch

from .registry import registrar


class Optimizer(Protocol):
    """What the training loop and the checkpoints use of an optimizer."""

    param_groups: list[dict[str, Any]]

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class Adam:
    """Adam (Kingma and Ba, 2015) without weight decay or AMSGrad: ``torch.optim.Adam(params, lr, betas,
    eps, fused=True)``'s update and ``state_dict``. Per parameter, as torch keeps it: ``step`` (a float32
    scalar), ``exp_avg`` and ``exp_avg_sq``, made at the first step that gives the parameter a gradient."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam got no parameters")
        # One group, as torch.optim keeps it: the learning rate may be set there between steps.
        group = {"params": self.params, "lr": float(lr), "betas": tuple(betas), "eps": float(eps)}
        self.param_groups = [group]
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        # Fail here, not at the first step, where this torch has no fused kernel for these tensors
        # (adam() then builds torch.optim.Adam instead).
        probe = torch.zeros(1, dtype=self.params[0].dtype, device=self.params[0].device)
        step = torch.zeros((), dtype=torch.float32, device=probe.device)
        self._kernel([probe], [probe.clone()], [probe.clone()], [probe.clone()], [step])

    def _kernel(self, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
        group = self.param_groups[0]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params, grads, exp_avgs, exp_avg_sqs, [], steps,
            amsgrad=False, lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1],
            weight_decay=0.0, eps=group["eps"], maximize=False,
        )  # fmt: skip

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        for i in live:
            if i not in self.state:
                p = self.params[i]
                self.state[i] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        if live:
            states = [self.state[i] for i in live]
            self._kernel(
                [self.params[i] for i in live],
                [self.params[i].grad for i in live],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states],
            )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        group = self.param_groups[0]
        saved = {
            "lr": group["lr"], "betas": group["betas"], "eps": group["eps"], "weight_decay": 0,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
            "differentiable": False, "fused": True, "decoupled_weight_decay": False,
            "params": list(range(len(self.params))),
        }  # fmt: skip
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": [saved]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A ``state_dict`` of this class or of ``torch.optim.Adam`` over the same parameters."""
        (group,) = state_dict["param_groups"]
        if len(group["params"]) != len(self.params) or group.get("amsgrad") or group.get("weight_decay"):
            raise ValueError("the optimizer state is not Adam's over these parameters")
        self.param_groups[0].update(
            lr=float(group["lr"]), betas=(float(group["betas"][0]), float(group["betas"][1])),
            eps=float(group["eps"]),
        )  # fmt: skip
        position = {saved: i for i, saved in enumerate(group["params"])}
        self.state = {}
        for saved, s in state_dict["state"].items():
            i = position[int(saved)]
            p = self.params[i]
            self.state[i] = {
                "step": torch.as_tensor(s["step"], dtype=torch.float32).to(p.device),
                "exp_avg": s["exp_avg"].to(device=p.device, dtype=p.dtype),
                "exp_avg_sq": s["exp_avg_sq"].to(device=p.device, dtype=p.dtype),
            }


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """The learning rate of every parameter group (this module's Adam or a ``torch.optim`` one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


SCHEDULES: dict[str, type[Schedule]] = {}
register = registrar(SCHEDULES)


class Schedule:
    """The learning rate of each epoch, as a factor of the configured one (``fit --lr-schedule``)."""

    name: str

    @staticmethod
    def factor(epoch: int) -> float:
        raise NotImplementedError


@register("constant")
class Constant(Schedule):
    """The configured rate throughout."""

    @staticmethod
    def factor(epoch):
        return 1.0


@register("burda")
class Burda(Schedule):
    """The IWAE paper's (Burda et al., 2015, Sec. 5): stage ``i = 0..7`` runs ``3^i`` epochs at
    ``10^(-i/7)`` times the rate, 3,280 epochs in all; any epoch past them stays at the last stage's rate."""

    stages = 8

    @classmethod
    def stage(cls, epoch: int) -> int:
        """The stage of ``epoch`` (1-based): the least ``i`` with ``epoch <= 3^0 + ... + 3^i``."""
        i, end = 0, 1
        while epoch > end and i < cls.stages - 1:
            i += 1
            end += 3**i
        return i

    @classmethod
    def factor(cls, epoch):
        return 10 ** (-cls.stage(epoch) / 7)
