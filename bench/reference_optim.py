"""The update rules of the reference codes, written out so each one is visible in one place.

PyTorch's optimizers differ from the TF1, Theano and NumPy updates the papers trained with in
their initial accumulators and in where ε sits, which changes the early steps by an order of
magnitude (TF1's RMSPropOptimizer/AdagradOptimizer, Theano rms_prop in optimizations.py,
scuRNN_mnist.py's Update_step_A). Three small classes cover every reference rule; the
registry in ``bench/optim.py`` names each configuration (``tf_rmsprop``, ``scurnn_adagrad``, ...).

All state lives in ``self.state[p]`` as tensors, so checkpoints hold it; no step syncs the host.
"""
from __future__ import annotations

import torch

from bench.errors import ConfigError

EPS_PLACEMENTS = ("inside", "outside")


def _check(name: str, value, ok: bool, expected: str):
    if not ok:
        raise ConfigError(f"optimizer option {name}={value!r} is invalid: expected {expected}")


def _denominator(acc: torch.Tensor, eps: float, placement: str) -> torch.Tensor:
    """sqrt(acc + eps) ("inside") or sqrt(acc) + eps ("outside")."""
    return (acc + eps).sqrt() if placement == "inside" else acc.sqrt().add_(eps)


class PerParameterOptimizer(torch.optim.Optimizer):
    """An optimizer whose step is one ``update(p, grad, state, group)`` per parameter with a
    gradient; subclasses write only the update."""

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, p.grad, self.state[p], group)
        return loss


class MeanSquareRMSprop(PerParameterOptimizer):
    """RMSprop with a chosen initial mean square and ε placement, no momentum::

        ms <- decay·ms + (1 - decay)·g²          (ms starts at ``initial_accumulator``)
        p  <- p - lr·g / sqrt(ms + eps)          (eps_placement="inside")
        p  <- p - lr·g / (sqrt(ms) + eps)        (eps_placement="outside")

    TF1 ``RMSPropOptimizer``: initial 1, ε 1e-10 inside. Theano ``rms_prop`` of Arjovsky's and
    Wisdom's code: initial 1e-3, no ε. scuRNN's NumPy A-update: initial 0, ε 1e-8 inside.
    Keras 1 ``RMSprop``: initial 0, ε 1e-8 outside.
    """

    def __init__(self, params, lr: float, *, decay: float = 0.9, eps: float = 1e-10,
                 eps_placement: str = "inside", initial_accumulator: float = 1.0):
        _check("decay", decay, 0 <= decay < 1, "a number in [0, 1)")
        _check("eps", eps, eps >= 0, "a non-negative number")
        _check("eps_placement", eps_placement, eps_placement in EPS_PLACEMENTS, " or ".join(EPS_PLACEMENTS))
        _check("initial_accumulator", initial_accumulator, initial_accumulator >= 0, "a non-negative number")
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps, eps_placement=eps_placement,
                                      initial_accumulator=initial_accumulator))

    def update(self, p, g, state, group):
        if not state:
            state["mean_square"] = torch.full_like(p, group["initial_accumulator"])
        ms = state["mean_square"].mul_(group["decay"]).addcmul_(g, g, value=1 - group["decay"])
        p.addcdiv_(g, _denominator(ms, group["eps"], group["eps_placement"]), value=-group["lr"])


class AccumulatorAdagrad(PerParameterOptimizer):
    """Adagrad with a chosen initial accumulator and ε placement::

        acc <- acc + g²                          (acc starts at ``initial_accumulator``)
        p   <- p - lr·g / sqrt(acc + eps)   or   p - lr·g / (sqrt(acc) + eps)

    TF1 ``AdagradOptimizer``: initial 0.1, no ε. scuRNN's NumPy A-update: initial 0, ε 1e-8
    outside (so its first step is ≈ lr·sign(g)).
    """

    def __init__(self, params, lr: float, *, eps: float = 0.0, eps_placement: str = "outside",
                 initial_accumulator: float = 0.1):
        _check("eps", eps, eps >= 0, "a non-negative number")
        _check("eps_placement", eps_placement, eps_placement in EPS_PLACEMENTS, " or ".join(EPS_PLACEMENTS))
        _check("initial_accumulator", initial_accumulator, initial_accumulator >= 0, "a non-negative number")
        if eps == 0 and initial_accumulator == 0:
            raise ConfigError("optimizer options eps=0 and initial_accumulator=0 together divide by zero "
                              "wherever a gradient entry is 0; give one of them a positive value")
        super().__init__(params, dict(lr=lr, eps=eps, eps_placement=eps_placement,
                                      initial_accumulator=initial_accumulator))

    def update(self, p, g, state, group):
        if not state:
            state["accumulator"] = torch.full_like(p, group["initial_accumulator"])
        acc = state["accumulator"].addcmul_(g, g)
        p.addcdiv_(g, _denominator(acc, group["eps"], group["eps_placement"]), value=-group["lr"])


class BiasCorrectedAdam(PerParameterOptimizer):
    """Adam in either of its two published forms (m, v start at 0, t counts steps from 1)::

        m <- b1·m + (1 - b1)·g;   v <- b2·v + (1 - b2)·g²
        epsilon_hat=True  (TF1 AdamOptimizer, Kingma & Ba's "ε-hat" form):
            p <- p - lr·sqrt(1 - b2^t)/(1 - b1^t) · m / (sqrt(v) + eps)
        epsilon_hat=False (the paper's Algorithm 1; scuRNN's NumPy A-update; torch.optim.Adam):
            p <- p - lr · (m/(1 - b1^t)) / (sqrt(v/(1 - b2^t)) + eps)
    """

    def __init__(self, params, lr: float, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 epsilon_hat: bool = True):
        betas = tuple(float(b) for b in betas)
        _check("betas", betas, len(betas) == 2 and all(0 <= b < 1 for b in betas), "two numbers in [0, 1), e.g. 0.9/0.999")
        _check("eps", eps, eps >= 0, "a non-negative number")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, epsilon_hat=bool(epsilon_hat)))

    def update(self, p, g, state, group):
        b1, b2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        m = state["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        v = state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        if group["epsilon_hat"]:
            p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-group["lr"] * c2 ** 0.5 / c1)
        else:
            p.addcdiv_(m / c1, (v / c2).sqrt().add_(group["eps"]), value=-group["lr"])
