"""Restricted-capacity uRNN (Arjovsky, Shah & Bengio, ICML 2016; amarshah/complex_RNN).

W = D3 R2 F^-1 D2 Π R1 F D1 acting on the complex state: D_k = diag(e^{iθ_k}), R_k = I - 2vv^H/|v|^2
with unnormalised complex v, F the unitary DFT (``norm="ortho"``), Π a fixed permutation
(numpy seed 1234). 7n recurrent parameters. W is built once per forward pass by applying the
factors to the identity (Wisdom's ``adhoc_fast``), then the recurrence is one real GEMM per step;
for large n on CPU the factors are applied to the state at each step instead (option ``dense``).
With ``fast`` either runs through a fused recurrence with a hand-written backward (models/fastpath.py
for the dense W, models/fastpath_urnn.py for the factors); the plain loop ``unitary.unroll`` is the
reference and the recorder's path.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bench.errors import ConfigError

from .base import glorot_
from .complex_rnn import ComplexModReLURNN
from .fastpath_urnn import interleave, urnn_rnn
from .unitary import MODRELU_EPS, modrelu_cplx, unroll

PERMUTATION_SEED = 1234


def fixed_permutation(n: int) -> torch.Tensor:
    """Arjovsky's Π: ``np.random.permutation(n)`` after seeding numpy with 1234."""
    return torch.from_numpy(np.random.RandomState(PERMUTATION_SEED).permutation(n))


def _reflect(X: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # rows x of X -> (I - 2 v v^H / |v|^2) x
    coef = (X @ v.conj()) * (2.0 / (v.abs() ** 2).sum())
    return X - coef.unsqueeze(-1) * v


def urnn_factors(theta: torch.Tensor, reflections: torch.Tensor):
    """(d, v): the diagonals e^{iθ_k} (3, n) and the complex reflection vectors (2, n)."""
    n = theta.shape[-1]
    return torch.polar(torch.ones_like(theta), theta), torch.complex(reflections[:, :n], reflections[:, n:])


def apply_restricted(X: torch.Tensor, d: torch.Tensor, v: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """W x = D3 R2 F^-1 D2 Π R1 F D1 x for every row x of the complex X (..., n)."""
    X = torch.fft.fft(X * d[0], dim=-1, norm="ortho")                  # D1, F
    X = _reflect(X, v[0])                                               # R1
    X = torch.fft.ifft(X[..., perm] * d[1], dim=-1, norm="ortho")       # Π, D2, F^-1
    return _reflect(X, v[1]) * d[2]                                     # R2, D3


def restricted_unitary(theta: torch.Tensor, reflections: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Row-convention complex matrix M of W = D3 R2 F^-1 D2 Π R1 F D1 (``h_t = h_{t-1} M``).

    Args:
        theta: (3, n) real phases of D1, D2, D3.
        reflections: (2, 2n) real, row k is [Re v_k | Im v_k].
        perm: (n,) long, the fixed permutation Π.

    Applying the operator to every row of I gives M = W^T, so ``h @ M`` equals ``W h``.
    """
    d, v = urnn_factors(theta, reflections)
    return apply_restricted(torch.eye(theta.shape[-1], dtype=d.dtype, device=d.device), d, v, perm)


def dense_is_faster(n: int, layers: float, device: torch.device, *, fused: bool = False, real: bool = False) -> bool:
    """Automatic choice: dense W (one GEMM per step) or the factored operator applied per step.

    Per step, the dense path costs ~n^2 and the factored one ~n (layers + 6) (elementwise work
    per layer plus a fixed part), so dense wins while n <= C (layers + 6); urnn counts as 6 layers.
    C was measured on CPU (1 thread, batch 20, T = 120; README, "Models"), the dense side through
    models/fastpath.py: C = 32 against the plain factored loop (``fast=False``); C = 12 against
    the fused factored paths (``fused``: models/fastpath_factored.py, fastpath_urnn.py), whose
    crossovers are at n = 90, 127, 170, 245 for eurnn's L = 2, 4, 8, 16, 250 for its FFT style
    (8 layers) and 165 for urnn. ``real``: eurnn's real version, whose n counts as n / 2 (its
    crossovers are at about twice the complex version's n: 175 for L = 2, 225 for L = 4).
    On GPUs the dense GEMM (one kernel per step instead of ~20) is used (not measured: no GPU).
    """
    if device.type != "cpu":
        return True
    if fused:
        return (n / 2 if real else n) <= 12 * (layers + 6)
    return n <= 32 * (layers + 6)


class URNN(ComplexModReLURNN):
    """Restricted-capacity uRNN.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: complex hidden size n (the real state has 2n entries).
        dense: ``True`` multiplies W out once per forward and runs one GEMM per step;
            ``False`` applies the factors to the state at every step (O(n log n)); ``None``
            picks the faster for the device and n (``dense_is_faster``). Default: ``None``.
        fast: run the dense recurrence with ``fastpath.recurrence`` and the factored one with
            ``fastpath_urnn.urnn_rnn`` (hand-written backwards); ``False`` uses the plain
            autograd loop ``unitary.unroll``. Default: ``True``.

    modReLU uses the harness's ε (inside the root and in the denominator); the released code
    has ε only in the denominator, which gives NaN gradients at z = 0.

    Example::

        >>> model = URNN(d_input=10, d_output=9, n_hidden=470)
        >>> model(torch.rand(2, 120, 10)).shape
        torch.Size([2, 120, 9])
    """

    name = "urnn"
    description = "restricted-capacity unitary RNN: diagonals, FFTs, reflections, fixed permutation (7n params)"
    paper = "Arjovsky, Shah & Bengio, ICML 2016"
    groups = ("W", "D", "other")
    default_opts = {"W": ("rmsprop", 1e-3), "D": ("rmsprop", 1e-3), "other": ("rmsprop", 1e-3)}
    optimizer_semantics = {"*": "theano"}   # Arjovsky's Theano rms_prop (complex_RNN optimizations.py)

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, dense: bool | None = None, fast: bool = True):
        self.valid_hidden(n_hidden, dense=dense)
        super().__init__(d_input, d_output, n_hidden)
        n = n_hidden
        self.fast = fast                                         # models/fastpath.py, fastpath_urnn.py
        self.dense = dense                                       # None: chosen per forward (dense_is_faster)
        self.theta = nn.Parameter(torch.empty(3, n).uniform_(-math.pi, math.pi))     # D1, D2, D3
        self.reflections = nn.Parameter(glorot_(torch.empty(2, 2 * n)))              # [Re v | Im v]
        self.register_buffer("perm", fixed_permutation(n))
        self.init_io(h0_bound=(3.0 / (2 * n)) ** 0.5)                                # U is [Re V | Im V]

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, dense: bool | None = None) -> int:
        # 3n phases + 4n reflection reals + n bias + 2n h0 + 2nm input + 2np + p readout
        return 10 * n + 2 * n * (d_input + d_output) + d_output

    @classmethod
    def valid_hidden(cls, n: int, *, dense: bool | None = None) -> None:
        if dense is not None and not isinstance(dense, bool):
            raise ConfigError(f"urnn: option dense must be true, false or null (automatic), got {dense!r}")
        super().valid_hidden(n)

    def param_groups(self):
        return {"W": [self.reflections], "D": [self.theta], "other": self.io_parameters()}

    def recurrent_matrix(self) -> torch.Tensor:
        """Complex (n, n) unitary matrix for the row convention h_t = ... + h_{t-1} W."""
        return restricted_unitary(self.theta, self.reflections, self.perm)

    def use_dense(self, device: torch.device) -> bool:
        return self.dense if self.dense is not None else dense_is_faster(self.n_hidden, 6, device, fused=self.fast)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        if self.fast_now and not self.use_dense(x.device):
            return self.fused_factored(x)
        return super().forward(x)

    def fused_factored(self, x: torch.Tensor) -> torch.Tensor:
        """The factored path through models/fastpath_urnn.py: input projection, recurrence and
        readout in one Function (the factors built with autograd once per forward)."""
        n = self.n_hidden
        d, v = urnn_factors(self.theta, self.reflections)
        w = v.conj() * (2.0 / (v.abs() ** 2).sum(-1, keepdim=True))        # x <- x - (x w) v
        return urnn_rnn(x, interleave(self.U), torch.complex(self.h0[:, :n], self.h0[:, n:]), d, v, w, self.perm,
                        self.bias, interleave(self.readout.weight), self.readout.bias, eps=MODRELU_EPS)

    def factored_states(self, xu: torch.Tensor) -> torch.Tensor:
        """The factors applied to the complex state at every step (O(n log n)) by ``unitary.unroll``."""
        n = self.n_hidden
        d, v = urnn_factors(self.theta, self.reflections)    # built once per forward
        hc = unroll(torch.complex(xu[..., :n], xu[..., n:]), torch.complex(self.h0[:, :n], self.h0[:, n:]),
                    lambda h: apply_restricted(h, d, v, self.perm), lambda z: modrelu_cplx(z, self.bias),
                    self.modrelu_record())
        return torch.cat([hc.real, hc.imag], dim=-1)
