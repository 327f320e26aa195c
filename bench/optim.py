"""Different optimizer classes per parameter group, in one training step, through one wrapper.

Lightning allows several optimizers only with manual optimisation, which breaks global-norm
clipping and makes ``global_step`` count every inner step (reference/harness.md §1.1). So the
LightningModule returns a single ``GroupOptimizer`` holding one inner optimizer per group.

Optimizer names (the semantics of the papers' TF/Theano code where PyTorch differs):
    rmsprop  torch RMSprop with decay alpha=0.9 (the reference codes' decay; PyTorch's is 0.99)
    adam     torch Adam, defaults
    adagrad  torch Adagrad with initial accumulator 0.1 (TF1's default, used for scuRNN's theta)
    sgd      plain SGD
    cayley   the full-capacity uRNN's multiplicative Cayley step on the unitary/orthogonal group
             (Wisdom et al. 2016), for square matrices only (fcurnn's ``W`` group)
    cayley_rms  the same step on the gradient divided elementwise by its running RMS (the
             reference's MNIST recipe, Keras ``full_natGradRMS``)
A callable ``(params, lr) -> Optimizer`` may be registered in ``OPTIMIZERS`` too.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

from bench.models.errors import ConfigError, UnknownNameError

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr, alpha=0.9),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "adagrad": lambda params, lr: torch.optim.Adagrad(params, lr=lr, initial_accumulator_value=0.1),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "cayley": lambda params, lr: CayleyStep(params, lr=lr),
    "cayley_rms": lambda params, lr: CayleyStep(params, lr=lr, rms=True),
}

_OPT_RE = re.compile(r"^\s*([A-Za-z_][\w]*)\s*=\s*([A-Za-z_][\w-]*)\s*:\s*([0-9.eE+-]+)\s*$")


class CayleyStep(torch.optim.Optimizer):
    """Multiplicative Cayley step of the full-capacity uRNN (reference/models.md §5).

    For each square matrix W (real, or complex stored as a real (n, n, 2) tensor) with
    gradient G = dL/dRe W + i dL/dIm W:

        A = G W^H - W G^H                      (skew-Hermitian)
        W <- (I + lr/2 A)^{-1} (I - lr/2 A) W   (a solve, in W's own dtype)

    To first order this is W - lr (G - W G^H W), Riemannian gradient descent. In exact
    arithmetic W stays unitary; in float32 rounding accumulates and nothing corrects it (the
    reference's SVD re-projection is commented out), so W drifts: fcurnn logs the drift.

    Args:
        params: square parameters, (n, n) real or (n, n, 2) complex-as-real.
        lr: the step size lambda.
        rms: divide G elementwise by its running RMS first (decay ``alpha``, ``eps`` added to
            the root), as the reference's MNIST recipe. Default: ``False``.
    """

    def __init__(self, params, lr: float, rms: bool = False, alpha: float = 0.9, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, rms=rms, alpha=alpha, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                square = p.dim() == 2 or (p.dim() == 3 and p.shape[-1] == 2)
                if not square or p.shape[0] != p.shape[1]:
                    raise ConfigError(
                        f"the cayley optimizer needs square matrices, shape (n, n) or complex-as-real "
                        f"(n, n, 2); got a parameter of shape {tuple(p.shape)} (use it for fcurnn's W group)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            half = group["lr"] / 2
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["rms"]:
                    sq = self.state[p].setdefault("square_avg", torch.zeros_like(p))
                    sq.mul_(group["alpha"]).addcmul_(g, g, value=1 - group["alpha"])
                    g = g / (sq.sqrt() + group["eps"])
                W = torch.view_as_complex(p) if p.dim() == 3 else p
                G = torch.view_as_complex(g.contiguous()) if p.dim() == 3 else g
                A = G @ W.mH - W @ G.mH
                eye = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
                W.copy_(torch.linalg.solve(eye + half * A, (eye - half * A) @ W))
        return loss


def get_optimizer(name: str | Callable) -> Callable[..., torch.optim.Optimizer]:
    if callable(name):
        return name
    if name not in OPTIMIZERS:
        raise UnknownNameError(f"unknown optimizer {name!r}; known optimizers: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[name]


def parse_opt(spec: str) -> tuple[str, str, float]:
    """``"A=rmsprop:1e-4"`` -> ``("A", "rmsprop", 1e-4)``; clear errors for anything else."""
    m = _OPT_RE.match(spec)
    if not m:
        raise ConfigError(f"malformed --opt {spec!r}: expected GROUP=OPTIMIZER:LR, e.g. A=rmsprop:1e-4")
    group, opt, lr_text = m.groups()
    try:
        lr = float(lr_text)
    except ValueError:
        raise ConfigError(f"malformed --opt {spec!r}: learning rate {lr_text!r} is not a number") from None
    if not lr > 0:
        raise ConfigError(f"--opt {spec!r}: learning rate must be positive, got {lr_text}")
    get_optimizer(opt.lower())
    return group, opt.lower(), lr


class GroupOptimizer(torch.optim.Optimizer):
    """One optimizer made of per-group inner optimizers, stepped together.

    Args:
        groups: ``{group name: (params, optimizer name or callable, lr)}``.

    ``param_groups`` concatenates the inner groups (each tagged with ``"name"``), so
    Lightning's gradient clipping sees every parameter (one global norm) and
    ``LearningRateMonitor`` sees every rate; ``state_dict`` holds every inner state.

    Example::

        >>> opt = GroupOptimizer({"A": ([a], "rmsprop", 1e-4), "other": ([w], "adam", 1e-3)})
        >>> loss.backward(); opt.step(); opt.zero_grad()
    """

    def __init__(self, groups: dict[str, tuple[list[torch.nn.Parameter], str | Callable, float]]):
        # No super().__init__(): param_groups and state are views of the inner optimizers.
        self.defaults = {}
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}
        self.names: list[str] = []
        self.inner: list[torch.optim.Optimizer] = []
        self.specs: dict[str, tuple[str, float]] = {}
        for name, (params, opt, lr) in groups.items():
            params = [p for p in params if p.requires_grad]
            if not params:
                continue
            inner = get_optimizer(opt)(params, lr)
            for group in inner.param_groups:
                group["name"] = name
            self.names.append(name)
            self.inner.append(inner)
            self.specs[name] = (opt if isinstance(opt, str) else getattr(opt, "__name__", "custom"), lr)

    @property
    def param_groups(self):
        return [g for opt in self.inner for g in opt.param_groups]

    @property
    def state(self):
        merged = {}
        for opt in self.inner:
            merged.update(opt.state)
        return merged

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.inner:
            opt.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.inner:
            opt.step()
        return loss

    def state_dict(self):
        return {"names": list(self.names), "inner": [opt.state_dict() for opt in self.inner]}

    def load_state_dict(self, state_dict):
        if state_dict.get("names") != self.names:
            raise ConfigError(
                f"checkpoint optimizer groups {state_dict.get('names')} do not match this run's {self.names}"
            )
        for opt, sd in zip(self.inner, state_dict["inner"]):
            opt.load_state_dict(sd)

    def __repr__(self):
        return "GroupOptimizer(" + ", ".join(f"{n}={o}:{lr:g}" for n, (o, lr) in self.specs.items()) + ")"
