"""minGRU (Feng et al., "Were RNNs All We Needed?", arXiv:2410.01201, 2024), one layer, and the
parts minLSTM shares (``g``, ``MinimalRNN``).

The gates see only the input, so the state follows a first-order linear recurrence

    h_t = a_t * h_{t-1} + b_t,   a_t = 1 - z_t,  b_t = z_t * g(W_h x_t + b_h),  z_t = sigmoid(W_z x_t + b_z)

(the paper's Algorithm 5). ``g`` (x + 0.5 for x >= 0, sigmoid(x) below; App. B, Listing 6) is
the candidate's activation of the paper's log-space version, which keeps h positive; it is part
of the model whichever scan computes it.

Two forms of the same function, equal in float64 to ~1e-15 (tests/test_model_minrnn.py):

* ``fast=True``: the paper's parallel mode (Algorithms 2 and 6: one scan of a = 1 - z and
  b = z * g(h~) from h0), computed by ``models/scan.py``'s ``linear_scan``, a doubling scan that
  only multiplies and adds. See Note [which parallel scan].
* ``fast=False``: the paper's sequential mode, one step at a time (``sequential_scan``).

Note [which parallel scan]: the paper trains with Heinsen's log-space scan (App. B, Listing 5:
A = cumsum log a, h = exp(A + logcumsumexp(log b - A))). Measured against the loop in float64
(this model, n=8, default init, biases moved by N(0, 0.25)): its outputs agree to 2e-13, but its
parameter gradients miss 1e-10 at L=1000 (update-gate bias: 1.4e-10 relative to the largest
entry, 3.7e-10 with saturated gates, 1e-9 at L=4000): the backward of A_t + lcse(log b - A)
subtracts two sums of O(L) terms, so its error grows with L. In float32 at L=1000 its outputs are
off by 4e-5 to 3e-4 (gate pre-activations O(1) to O(10)): the rounding of A_t, which reaches
-10^3 to -10^4, is relative error in h. ``linear_scan`` agrees with the loop to ~1e-15 in float64,
outputs and gradients, up to L=4000; in float32 its outputs are within 3e-7 of the float64 loop
(gradients 4e-6). It never divides or takes logs, so nothing over- or underflows (products of
decays in (0, 1) underflow harmlessly to 0). Hence ``linear_scan``. (The paper's code also writes
log sigmoid(k) as ``-F.softplus(-k)``, whose threshold=20 cut-off is off by up to e^-20 = 2e-9.)

The gates are computed without cancellation: 1 - z as sigmoid(-k) (1 - sigmoid(k) loses
relative precision where z is near 1), so both forms scan the same exact coefficients.

Initial state, as the authors' code (github.com/BorealisAI/minRNNs, ``models/minRNNs.py``, with
``use_init_hidden_state: True`` in ``configs/default.yaml``): a trainable vector h0 ~ N(0, 1)
that enters as g(h0) (log_g(h0) in their log form, as the paper's Listing 8) before the first
step. It adds n parameters. ``learn_h0=False`` starts from 0, as that code does without one.

A single layer has no nonlinearity across time: the gates depend on x_t alone and h_t is affine
in h_{t-1}, so h_t = (prod_{s<=t} a_s) g(h0) + sum_{s<=t} (prod_{s<r<=t} a_r) b_s. The paper gets
time-dependent nonlinearity by stacking layers (its Table 1: selective copying improves sharply
from one layer to two or more); this model stays one faithful layer with a linear readout at
every step, like the harness's other RNNs.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .base import RecurrentModel, glorot_
from .scan import linear_scan, sequential_scan


def g(x: torch.Tensor) -> torch.Tensor:
    """x + 0.5 for x >= 0, sigmoid(x) below: positive and continuous (g(0) = 0.5); paper App. B."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


class MinimalRNN(RecurrentModel):
    """What minGRU and minLSTM share: the input maps, h0, the two scans and the readout.

    A subclass names its input maps in ``linears`` (each ``nn.Linear(m, n)``) and defines
    ``coefficients(x) -> (a, b)`` of h_t = a_t * h_{t-1} + b_t. Not registered (no ``name``).
    """

    linears: ClassVar[tuple[str, ...]] = ()
    groups = ("other",)
    optimizer_semantics = {"*": "torch"}   # the authors' code is PyTorch (torch.optim.AdamW)
    # AdamW at lr 3e-4 in the authors' configs (configs/selective_copy.yaml, parity_check.yaml)
    # with weight decay 0 on the recurrent layer's parameters (main.py): that is Adam
    default_opts = {"other": ("adam", 3e-4)}
    default_hidden = 64   # the harness default; the paper's sizes are for stacks with residual blocks

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, learn_h0: bool = True, fast: bool = True):
        super().__init__(d_input, d_output, n_hidden)
        n = n_hidden
        self.learn_h0, self.fast = bool(learn_h0), bool(fast)
        for name in self.linears:
            # PyTorch's nn.Linear default init (weights and biases U(+-1/sqrt(m))), as the authors' code
            setattr(self, name, nn.Linear(d_input, n))
        # h0 ~ N(0, 1) as the authors' init_hidden_state; used through g
        self.h0 = nn.Parameter(torch.randn(n)) if self.learn_h0 else None
        self.readout = nn.Linear(n, d_output)
        glorot_(self.readout.weight.data.T)
        nn.init.zeros_(self.readout.bias)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, learn_h0: bool = True) -> int:
        # each input map n(m + 1); h0 n; readout np + p
        return len(cls.linears) * n * (d_input + 1) + (n if learn_h0 else 0) + n * d_output + d_output

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define coefficients(x) -> (a, b)")

    def hidden_states(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, n)
        a, b = self.coefficients(x)
        h0 = None if self.h0 is None else g(self.h0).unsqueeze(0)
        if self.fast_now:
            return linear_scan(a, b, h0)
        return sequential_scan(a, b, h0, self.step_record())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        return self.readout(self.hidden_states(x))


class MinGRU(MinimalRNN):
    """minGRU, one layer, with a linear readout at every step.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n.
        learn_h0: a trainable initial state h0, used as g(h0), as the authors' code; ``False``
            starts from h = 0. Default: ``True``.
        fast: the parallel scan (``True``) or the step-by-step loop (``False``); the same
            function. Default: ``True``.

    ``linear_z`` and ``linear_h`` are the paper's two maps (Algorithm 5), with PyTorch's
    ``nn.Linear`` init as the authors' code; h0 ~ N(0, 1); the readout is Glorot-uniform with
    zero bias (the harness's convention, gru.py).

    Example::

        >>> model = MinGRU(d_input=2, d_output=1, n_hidden=64)
        >>> model(torch.rand(2, 200, 2)).shape
        torch.Size([2, 200, 1])
    """

    name = "mingru"
    description = "minGRU: input-only update gate, g-activated candidate, parallel scan (one layer)"
    paper = 'Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs All We Needed?", arXiv:2410.01201, 2024'
    linears = ("linear_z", "linear_h")

    def coefficients(self, x):
        # Algorithm 5: h_t = (1 - z_t) h_{t-1} + z_t g(h~_t); 1 - z as sigmoid(-k), without cancellation
        k = self.linear_z(x)
        return torch.sigmoid(-k), torch.sigmoid(k) * g(self.linear_h(x))
