"""Different optimizer classes per parameter group, in one training step, through one wrapper.

Lightning allows several optimizers only with manual optimisation, which breaks global-norm
clipping and makes ``global_step`` count every inner step (Lightning PR #16539, issue #17958). So the
LightningModule returns a single ``GroupOptimizer`` holding one inner optimizer per group.

A group's optimizer is a spec: a name, a learning rate and keyword options, written on the
command line as ``GROUP=NAME:LR[,KEY=VALUE...]`` (``A=rmsprop:1e-4``,
``other=torch_adam:1e-3,betas=0.9/0.95``) and stored as ``[name, lr]`` or
``[name, lr, {options}]``.

Names. The generic names ``rmsprop``, ``adam``, ``adagrad`` and ``sgd`` mean the update rule
of the model's own reference code (``SEMANTICS``; each model declares its family per group in
``optimizer_semantics``), so a paper row's "RMSProp" is the RMSProp the authors ran. Every
concrete rule also has its own name, which always means exactly that rule (``OPTIMIZERS``):

    tf_rmsprop      TF1 RMSPropOptimizer: decay 0.9, mean square starts at 1, ε 1e-10 inside the root
    tf_adagrad      TF1 AdagradOptimizer: accumulator starts at 0.1, no ε
    tf_adam         TF1 AdamOptimizer: ε-hat form, ε 1e-8 added to sqrt(v)
    theano_rmsprop  Arjovsky's / Wisdom's Theano rms_prop: decay 0.9, starts at 1e-3, no ε
    keras_rmsprop   Keras 1 RMSprop (Wisdom's MNIST code): decay 0.9, starts at 0, ε 1e-8 outside
    scurnn_rmsprop  scuRNN's NumPy A-update (Update_step_A): decay 0.9, starts at 0, ε 1e-8 inside
    scurnn_adagrad  scuRNN's NumPy A-update: accumulator starts at 0, ε 1e-8 outside the root
    scurnn_adam     scuRNN's NumPy A-update: bias-corrected Adam, ε 1e-8 outside sqrt(v-hat)
    torch_rmsprop, torch_adam, torch_adagrad
                    PyTorch's own classes with PyTorch's defaults (RMSprop alpha 0.99, ...)
    sgd             plain SGD (every reference's "sgd")
    cayley          the full-capacity uRNN's multiplicative Cayley step on the unitary/orthogonal
                    group (Wisdom et al. 2016), for square matrices only (fcurnn's ``W`` group)
    cayley_rms      the same step on the gradient divided elementwise by its running RMS (the
                    reference's MNIST recipe, Keras ``full_natGradRMS``)

Keyword options are the class's own (e.g. ``decay``, ``eps``, ``eps_placement``,
``initial_accumulator`` for the reference rules; ``alpha``, ``eps``, ``betas`` for torch's);
``describe`` lists every hyperparameter of a spec, and result.json records it per group.
A callable ``(params, lr, **options) -> Optimizer`` may be registered in ``OPTIMIZERS`` too.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from bench.errors import ConfigError, UnknownNameError
from bench.models.unitary import cayley
from bench.reference_optim import AccumulatorAdagrad, BiasCorrectedAdam, MeanSquareRMSprop, PerParameterOptimizer


@dataclass(frozen=True)
class Registered:
    """A named optimizer: its class, the options that make it this rule, and facts the class's
    signature does not show (for ``describe``)."""

    cls: Callable[..., torch.optim.Optimizer]
    fixed: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    semantics: str = ""

    def __call__(self, params, lr, **options):
        return self.cls(params, lr=lr, **{**self.fixed, **options})


_TORCH_RMS = {"initial_accumulator": 0.0, "eps_placement": "outside"}
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "tf_rmsprop": Registered(MeanSquareRMSprop, dict(decay=0.9, eps=1e-10, eps_placement="inside", initial_accumulator=1.0),
                             semantics="TF1 tf.train.RMSPropOptimizer (momentum 0, not centered)"),
    "tf_adagrad": Registered(AccumulatorAdagrad, dict(eps=0.0, eps_placement="outside", initial_accumulator=0.1),
                             semantics="TF1 tf.train.AdagradOptimizer"),
    "tf_adam": Registered(BiasCorrectedAdam, dict(betas=(0.9, 0.999), eps=1e-8, epsilon_hat=True),
                          semantics="TF1 tf.train.AdamOptimizer"),
    "theano_rmsprop": Registered(MeanSquareRMSprop, dict(decay=0.9, eps=0.0, eps_placement="inside", initial_accumulator=1e-3),
                                 semantics="rms_prop of Arjovsky's and Wisdom's Theano code (optimizations.py)"),
    "keras_rmsprop": Registered(MeanSquareRMSprop, dict(decay=0.9, eps=1e-8, eps_placement="outside", initial_accumulator=0.0),
                                semantics="Keras 1 RMSprop (Wisdom's mnist.py)"),
    "scurnn_rmsprop": Registered(MeanSquareRMSprop, dict(decay=0.9, eps=1e-8, eps_placement="inside", initial_accumulator=0.0),
                                 semantics="scuRNN's NumPy update of A (Update_step_A, 'rmsprop')"),
    "scurnn_adagrad": Registered(AccumulatorAdagrad, dict(eps=1e-8, eps_placement="outside", initial_accumulator=0.0),
                                 semantics="scuRNN's NumPy update of A (Update_step_A, 'adagrad')"),
    "scurnn_adam": Registered(BiasCorrectedAdam, dict(betas=(0.9, 0.999), eps=1e-8, epsilon_hat=False),
                              semantics="scuRNN's NumPy update of A (Update_step_A, 'adam')"),
    "torch_rmsprop": Registered(torch.optim.RMSprop, facts=_TORCH_RMS, semantics="torch.optim.RMSprop"),
    "torch_adam": Registered(torch.optim.Adam, facts={"epsilon_hat": False}, semantics="torch.optim.Adam"),
    "torch_adagrad": Registered(torch.optim.Adagrad, facts={"eps_placement": "outside"}, semantics="torch.optim.Adagrad"),
    "sgd": Registered(torch.optim.SGD, semantics="torch.optim.SGD (plain gradient descent, as every reference's sgd)"),
    "cayley": Registered(lambda params, lr, **kw: CayleyStep(params, lr=lr, **kw), semantics="Cayley step (Wisdom et al. 2016)"),
    "cayley_rms": Registered(lambda params, lr, **kw: CayleyStep(params, lr=lr, rms=True, **kw),
                             semantics="Cayley step on the RMS-normalised gradient (Wisdom's full_natGradRMS)"),
}

GENERIC = ("rmsprop", "adam", "adagrad", "sgd")
# family -> (what it is, generic name -> concrete name). A family without a rule of its own
# for a generic name maps it to torch's and says so in the description.
SEMANTICS: dict[str, tuple[str, dict[str, str]]] = {
    "tf": ("the TF1 optimizers of the scoRNN, scuRNN and EUNN reference code",
           {"rmsprop": "tf_rmsprop", "adam": "tf_adam", "adagrad": "tf_adagrad", "sgd": "sgd"}),
    "scurnn": ("the scuRNN authors' NumPy update of A (Update_step_A)",
               {"rmsprop": "scurnn_rmsprop", "adam": "scurnn_adam", "adagrad": "scurnn_adagrad", "sgd": "sgd"}),
    "theano": ("the Theano rms_prop of Arjovsky's and Wisdom's code (which has no Adam or Adagrad: torch's are used)",
               {"rmsprop": "theano_rmsprop", "adam": "torch_adam", "adagrad": "torch_adagrad", "sgd": "sgd"}),
    "torch": ("PyTorch's optimizers with PyTorch's defaults",
              {"rmsprop": "torch_rmsprop", "adam": "torch_adam", "adagrad": "torch_adagrad", "sgd": "sgd"}),
}
# options that select an implementation, not an update rule: left out of descriptions
_IMPLEMENTATION_OPTIONS = {"foreach", "maximize", "capturable", "differentiable", "fused"}
_SPEC_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*([A-Za-z_][\w-]*)\s*:\s*([^,\s]+)\s*((?:,[^,]*)*)$")


class CayleyStep(PerParameterOptimizer):
    """Multiplicative Cayley step of the full-capacity uRNN (stwisdom/urnn optimizations.py, rms_prop).

    For each square matrix W (real, or complex stored as a real (n, n, 2) tensor) with
    gradient G = dL/dRe W + i dL/dIm W:

        A = G W^H - W G^H                      (skew-Hermitian)
        W <- (I + lr/2 A)^{-1} (I - lr/2 A) W   (a solve, in W's own dtype: unitary.cayley)

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

    def update(self, p, g, state, group):
        if group["rms"]:
            sq = state.setdefault("square_avg", torch.zeros_like(p))
            sq.mul_(group["alpha"]).addcmul_(g, g, value=1 - group["alpha"])
            g = g / (sq.sqrt() + group["eps"])
        W = torch.view_as_complex(p) if p.dim() == 3 else p
        G = torch.view_as_complex(g.contiguous()) if p.dim() == 3 else g
        A = G @ W.mH - W @ G.mH
        W.copy_(cayley(group["lr"] / 2 * A, W))


def known_optimizers() -> list[str]:
    """Every name a spec may use: the generic names and the concrete ones."""
    return sorted(set(GENERIC) | set(OPTIMIZERS))


def resolve_name(name: str, family: str = "torch") -> str:
    """The concrete optimizer a name means for a model whose reference semantics are ``family``."""
    name = str(name).lower()
    if name in GENERIC:
        return SEMANTICS[family][1][name]
    if name not in OPTIMIZERS:
        raise UnknownNameError(f"unknown optimizer {name!r}; known optimizers: {', '.join(known_optimizers())}")
    return name


def get_optimizer(name: str | Callable) -> Callable[..., torch.optim.Optimizer]:
    """The factory ``(params, lr, **options)`` for a name (generic names mean PyTorch's here,
    outside any model's context) or a callable passed through."""
    if callable(name):
        return name
    return OPTIMIZERS[resolve_name(name)]


def split_spec(spec) -> tuple[str, float, dict]:
    """``[name, lr]``, ``[name, lr, {options}]`` or a tuple of those -> ``(name, lr, options)``."""
    if not isinstance(spec, (list, tuple)) or len(spec) not in (2, 3) or \
            (len(spec) == 3 and not isinstance(spec[2], dict)):
        raise ConfigError(f"malformed optimizer spec {spec!r}: expected [name, lr] or [name, lr, {{options}}]")
    name, lr = spec[0], spec[1]
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"malformed optimizer spec {spec!r}: learning rate {lr!r} is not a number") from None
    if not lr > 0:
        raise ConfigError(f"optimizer spec {spec!r}: learning rate must be positive, got {lr!r}")
    return str(name).lower(), lr, dict(spec[2]) if len(spec) == 3 else {}


def make_spec(name: str, lr: float, options: dict | None = None) -> list:
    return [name, float(lr), dict(options)] if options else [name, float(lr)]


def format_spec(spec) -> str:
    """``["tf_adam", 1e-3, {"betas": (0.9, 0.95)}]`` -> ``"tf_adam:0.001,betas=0.9/0.95"``, the text
    ``parse_opt`` reads back to the same spec (floats written exactly)."""
    name, lr, options = split_spec(spec)
    return f"{name}:{lr!r}" + "".join(f",{key}={_option_text(value)}" for key, value in options.items())


def _option_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(_option_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def _option_value(text: str):
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "/" in text:
        return tuple(_option_value(part) for part in text.split("/"))
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_opt(spec: str) -> tuple[str, list]:
    """``"A=rmsprop:1e-4"`` -> ``("A", ["rmsprop", 1e-4])``;
    ``"other=torch_adam:1e-3,betas=0.9/0.95"`` -> ``("other", ["torch_adam", 1e-3, {"betas": (0.9, 0.95)}])``."""
    m = _SPEC_RE.match(spec)
    if not m:
        raise ConfigError(f"malformed --opt {spec!r}: expected GROUP=OPTIMIZER:LR[,KEY=VALUE...], "
                          f"e.g. A=rmsprop:1e-4 or other=torch_adam:1e-3,betas=0.9/0.95")
    group, name, lr_text, rest = m.groups()
    try:
        lr = float(lr_text)
    except ValueError:
        raise ConfigError(f"malformed --opt {spec!r}: learning rate {lr_text!r} is not a number") from None
    if not lr > 0:
        raise ConfigError(f"--opt {spec!r}: learning rate must be positive, got {lr_text}")
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier() or not value.strip():
            raise ConfigError(f"malformed --opt {spec!r}: option {item!r} is not KEY=VALUE")
        options[key.strip()] = _option_value(value)
    resolve_name(name)
    return group, make_spec(name.lower(), lr, options)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def describe(spec, family: str = "torch") -> dict:
    """Every hyperparameter of ``spec`` as the model of reference ``family`` runs it: the concrete
    name, the class, each option with its default, and where ε sits. Raises ``ConfigError`` for
    an option the class does not take or a value it refuses (so bad specs fail before any work)."""
    name, lr, options = split_spec(spec)
    concrete = resolve_name(name, family)
    entry = OPTIMIZERS[concrete]
    probe = torch.zeros(2, 2, requires_grad=True)       # square, so the Cayley step accepts it too
    try:
        built = entry([probe], lr, **options)
    except TypeError as exc:
        cls = getattr(entry, "cls", entry)
        allowed = [p for p in inspect.signature(cls).parameters if p not in ("params", "lr", "self")] \
            if inspect.isclass(cls) else []
        raise ConfigError(f"optimizer {concrete!r} does not take the option(s) {sorted(options)} ({exc}); "
                          f"its options are: {', '.join(sorted(set(allowed) - _IMPLEMENTATION_OPTIONS)) or 'none'}") from None
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"optimizer {format_spec(spec)!r}: {exc}") from None
    hyper = {k: _jsonable(v) for k, v in built.defaults.items() if k not in _IMPLEMENTATION_OPTIONS}
    out = {"optimizer": concrete, "class": f"{type(built).__module__}.{type(built).__qualname__}",
           "semantics": getattr(entry, "semantics", "")}
    if name != concrete:
        out["requested"] = name
        out["reference_family"] = family
    return {**out, **getattr(entry, "facts", {}), **hyper}


class GroupOptimizer(torch.optim.Optimizer):
    """One optimizer made of per-group inner optimizers, stepped together.

    Args:
        groups: ``{group name: (params, optimizer name or callable, lr[, options])}``; names
            are resolved by ``get_optimizer`` (a generic name means PyTorch's here: the run
            config resolves generic names to the model's reference rules before this).

    ``param_groups`` concatenates the inner groups (each tagged with ``"name"``), so
    Lightning's gradient clipping sees every parameter (one global norm) and
    ``LearningRateMonitor`` sees every rate; ``state_dict`` holds every inner state.

    Example::

        >>> opt = GroupOptimizer({"A": ([a], "rmsprop", 1e-4), "other": ([w], "adam", 1e-3)})
        >>> loss.backward(); opt.step(); opt.zero_grad()
    """

    def __init__(self, groups: dict[str, tuple]):
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
        for name, (params, opt, lr, *options) in groups.items():
            params = [p for p in params if p.requires_grad]
            if not params:
                continue
            inner = get_optimizer(opt)(params, lr, **(options[0] if options else {}))
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
