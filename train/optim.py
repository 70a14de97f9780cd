"""The paper's optimisation: Adam with a linear warm-up and an exponential moving average of the weights.

Jukebox: Adam (lr 3e-4, betas 0.9/0.999, eps 1e-8, no weight decay), LambdaLR min(1, step/100) —
so the very first update has lr 0 — gradient-norm clipping at 1.0, and a parameter EMA with
mu = 1 − bs·ngpus/8/1000 = 0.9995 whose weights are the ones saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

BETAS = (0.9, 0.999)
EPS = 1e-8


def make_optimizer(parameters: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(parameters, lr=lr, betas=BETAS, eps=EPS, weight_decay=0.0)


def warmup_lr(step: int, lr: float, warmup: int) -> float:
    """Learning rate for the update made at `step` (counting from 0): lr · min(1, step / warmup)."""
    return lr * min(1.0, step / warmup) if warmup > 0 else lr


class ParameterEMA:
    """shadow ← decay · shadow + (1 − decay) · parameter after every update, in fp32."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.parameters = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self.shadow = {name: p.detach().float().clone() for name, p in self.parameters.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, parameter in self.parameters.items():
            self.shadow[name].mul_(self.decay).add_(parameter.detach().float(), alpha=1 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the averaged weights into the module for the duration (exactly restored afterwards)."""
        live = {name: p.detach().clone() for name, p in self.parameters.items()}
        with torch.no_grad():
            for name, parameter in self.parameters.items():
                parameter.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, parameter in self.parameters.items():
                    parameter.copy_(live[name])

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise ValueError("the saved weight averages do not match the model's parameters")
        for name, value in state.items():
            self.shadow[name].copy_(value)
