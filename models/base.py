"""The interface every recurrent model implements, and the model registry.

A model is a plain ``torch.nn.Module`` that maps a sequence to per-step outputs::

    model = build_model("scurnn", d_input=1, d_output=10, n_hidden=116)
    y = model(x)            # (B, L, d_input) -> (B, L, d_output)

REQUIRED members of a subclass:
    name (str)                  registry key, e.g. ``"scurnn"``
    description (str)           one line for ``bench list``
    paper (str)                 where the architecture comes from
    n_params(n, d_input, d_output, **options) -> int
                                exact count of effective trainable degrees of freedom
    forward(x)                  (B, L, d_input) -> (B, L, d_output)
    param_groups() -> dict      group name -> list of parameters (e.g. ``A``, ``D``, ``other``);
                                every trainable parameter is in exactly one group
OPTIONS are declared once, as the keyword-only arguments of ``__init__`` with their defaults
(``options()``). ``n_params``, ``valid_hidden`` and ``check_options`` declare only the options
that change the count or the validity; callers go through ``param_count``, ``check_hidden`` and
``hidden_for_budget``, which check the names and hand each method the options it declares (a
speed switch such as ``fast`` reaches none of them).
OPTIONAL:
    valid_hidden(n, **options)  raise ``InvalidHiddenSizeError`` for an impossible n
    check_options(**options)    raise for option values that are wrong whatever n is
    hidden_step (int)           n must be a multiple of this (default 1)
    post_step()                 called after each optimizer step (projections, re-basing)
    unitarity_error()           max |W^H W - I| of the recurrent matrix, for diagnostics
    unitarity_tolerance (float) the largest unitarity_error() the model claims after 100 float32
                                training steps (default 1e-5; `bench check-model` checks it)
RECORDING (bench/diagnostics.py): inside ``with model.recording(recorder):`` a forward pass runs
the model's plain per-step loop and reports every step to ``recorder.step(z, h, bias=..,
complex_=.., eps=..)``: the pre-activation z_t, the state h_t the next step reads (so dL/dh_t is
the total derivative), and the modReLU bias and ε when the activation is a modReLU. A model
passes ``self.step_record(...)`` as ``unitary.unroll``'s (or ``scan.sequential_scan``'s)
``record`` and takes its fused path only while ``self.fast_now``.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from functools import partial
from typing import Callable, ClassVar

import torch
from torch import nn

from bench.errors import ConfigError, InvalidHiddenSizeError, UnknownNameError

MODELS: dict[str, type["RecurrentModel"]] = {}


class RecurrentModel(nn.Module):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    groups: ClassVar[tuple[str, ...]] = ("other",)
    hidden_step: ClassVar[int] = 1
    unitarity_tolerance: ClassVar[float] = 1e-5
    default_hidden: ClassVar[int] = 64
    # groups that live on a manifold and must keep their own update: group -> allowed optimizers
    manifold_groups: ClassVar[dict[str, tuple[str, ...]]] = {}
    # optimizers for tasks the paper gives none for: group -> (optimizer, lr)
    default_opts: ClassVar[dict] = {"A": ("rmsprop", 1e-4), "D": ("adagrad", 1e-3), "other": ("adam", 1e-3)}
    # whose update rules the generic optimizer names (rmsprop, adam, adagrad, sgd) mean for
    # each group, "*" for the rest: a family of bench/optim.py SEMANTICS (the reference code's)
    optimizer_semantics: ClassVar[dict[str, str]] = {"*": "torch"}
    recorder = None          # set only inside ``recording``

    @classmethod
    def semantics_for(cls, group: str) -> str:
        return cls.optimizer_semantics.get(group, cls.optimizer_semantics["*"])

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            MODELS[cls.name] = cls

    def __init__(self, d_input: int, d_output: int, n_hidden: int):
        super().__init__()
        for label, value in (("d_input", d_input), ("d_output", d_output), ("hidden size", n_hidden)):
            if not isinstance(value, int) or value <= 0:
                raise InvalidHiddenSizeError(f"{self.name}: {label} must be a positive integer, got {value!r}")
        self.valid_hidden(n_hidden)
        self.d_input, self.d_output, self.n_hidden = d_input, d_output, n_hidden

    # -- interface -------------------------------------------------------------------
    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, **options) -> int:
        raise NotImplementedError(f"{cls.__name__} must define n_params(n, d_input, d_output)")

    @classmethod
    def valid_hidden(cls, n: int, **options) -> None:
        if n % cls.hidden_step:
            raise InvalidHiddenSizeError(
                f"{cls.name}: hidden size must be a multiple of {cls.hidden_step}, got {n}"
            )

    @classmethod
    def groups_for(cls, **options) -> tuple[str, ...]:
        """The parameter groups a model built with ``options`` has (default: ``groups``)."""
        return cls.groups

    @classmethod
    def check_options(cls, **options) -> None:
        """Errors in option values that do not depend on n (default: none)."""

    # -- the option-checked entry points every caller uses -------------------------------
    @classmethod
    def options(cls) -> dict[str, object]:
        """The model's options and their defaults: the keyword-only arguments of ``__init__``."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items() if p.kind == p.KEYWORD_ONLY}

    @classmethod
    def _declared(cls, method, options: dict) -> dict:
        """The subset of ``options`` that ``method`` declares (all of them if it takes **kwargs)."""
        unknown = sorted(set(options) - set(cls.options()))
        if unknown:
            known = ", ".join(sorted(cls.options())) or "none"
            raise ConfigError(f"unknown model option(s) {', '.join(map(repr, unknown))} for {cls.name}; "
                              f"its options are: {known}")
        params = inspect.signature(method).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return dict(options)
        return {k: v for k, v in options.items() if k in params}

    @classmethod
    def param_count(cls, n: int, d_input: int, d_output: int, **options) -> int:
        """``n_params`` for any of the model's options."""
        return cls.n_params(n, d_input, d_output, **cls._declared(cls.n_params, options))

    @classmethod
    def validate_options(cls, **options) -> None:
        """Raise for unknown option names, or option values wrong whatever n is."""
        cls.check_options(**cls._declared(cls.check_options, options))

    @classmethod
    def check_hidden(cls, n: int, **options) -> None:
        """Raise for unknown options, wrong option values, or a hidden size the model cannot have."""
        cls.validate_options(**options)
        cls.valid_hidden(n, **cls._declared(cls.valid_hidden, options))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"other": [p for p in self.parameters() if p.requires_grad]}

    def post_step(self) -> None:
        """Hook run after every optimizer step; most models need none."""

    def unitarity_error(self) -> float | None:
        return None

    # -- recording the states for diagnostics ------------------------------------------
    @contextmanager
    def recording(self, recorder):
        """Forward passes inside the block report each step to ``recorder`` (see RECORDING)."""
        self.recorder = recorder
        try:
            yield recorder
        finally:
            self.recorder = None

    @property
    def recording_now(self) -> bool:
        return self.recorder is not None

    @property
    def fast_now(self) -> bool:
        """Take the fused path: the model's ``fast`` option, unless a recorder is attached (the
        fused paths keep no per-step states)."""
        return bool(getattr(self, "fast", False)) and self.recorder is None

    def step_record(self, bias: torch.Tensor | None = None, *, complex_: bool = False, eps: float = 0.0):
        """``unitary.unroll``'s ``record`` argument: None unless recording. ``bias``: the modReLU
        bias (None for other activations); ``complex_``: a complex modReLU on [Re | Im] (or on a
        complex tensor); ``eps``: its ε inside the root."""
        if self.recorder is None:
            return None
        return partial(self.recorder.step, bias=bias, complex_=complex_, eps=eps)

    # -- shared helpers --------------------------------------------------------------
    def count_params(self) -> int:
        """Effective degrees of freedom; equals ``n_params`` (tests check it)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @classmethod
    def hidden_for_budget(cls, budget: int, d_input: int, d_output: int, **options) -> int:
        """The valid hidden size whose parameter count is closest to ``budget``."""
        cls.validate_options(**options)           # wrong whatever n is: say so now
        shape = cls._declared(cls.valid_hidden, options)
        best, best_gap, n = None, None, 1
        while True:
            try:
                cls.valid_hidden(n, **shape)
            except InvalidHiddenSizeError:
                n += 1
                if n > 1 << 16:
                    break
                continue
            count = cls.param_count(n, d_input, d_output, **options)
            gap = abs(count - budget)
            if best_gap is None or gap < best_gap:
                best, best_gap = n, gap
            if count > budget:
                break
            n += 1
        if best is None:
            raise InvalidHiddenSizeError(f"{cls.name}: no valid hidden size for a budget of {budget}")
        return best


def get_model_class(name: str | type | Callable) -> type[RecurrentModel]:
    """Registry entry for ``name``; a class is passed through (STYLE: name->callable tables)."""
    if isinstance(name, type) and issubclass(name, RecurrentModel):
        return name
    if name not in MODELS:
        raise UnknownNameError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        )
    return MODELS[name]


def build_model(name: str, d_input: int, d_output: int, n_hidden: int, **options) -> RecurrentModel:
    return get_model_class(name)(d_input=d_input, d_output=d_output, n_hidden=n_hidden, **options)


def torch_rnn_states(rnn: nn.LSTM | nn.GRU, x: torch.Tensor, record) -> torch.Tensor:
    """The states (B, L, n) of a one-layer, batch-first ``torch.nn.LSTM``/``GRU``, one step at a
    time: torch's fused loop keeps h_t out of reach, and here each h_t is the one tensor both the
    readout and the next step read, reported to ``record(None, h_t)``. Same numbers as ``rnn(x)``."""
    h, c, outs = None, None, []
    for x_t in x.unbind(1):
        state = None if h is None else ((h.unsqueeze(0), c) if c is not None else h.unsqueeze(0))
        _, state = rnn(x_t.unsqueeze(1), state)
        h, c = (state[0][0], state[1]) if isinstance(state, tuple) else (state[0], None)
        record(None, h)
        outs.append(h)
    return torch.stack(outs, dim=1)


def glorot_(tensor: torch.Tensor) -> torch.Tensor:
    """Glorot-uniform over the tensor's 2-D shape (fan_in = rows, fan_out = cols)."""
    fan_in, fan_out = tensor.shape[0], tensor.shape[1]
    bound = (6.0 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)
