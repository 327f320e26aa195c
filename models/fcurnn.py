"""Full-capacity uRNN (Wisdom, Powers, Hershey, Le Roux & Atlas, NeurIPS 2016; stwisdom/urnn).

W is a dense unitary matrix, updated outside every Euclidean optimizer by the multiplicative
Cayley step on the Stiefel manifold (the ``cayley`` optimizer in bench/optim.py, used for the
``W`` group). Nothing pulls W back onto the manifold: in float32 it drifts, and
``unitarity_error()`` (logged as ``diag/unitarity_error``) shows by how much (README, "Models").

Storage note: W is stored as a real (n, n, 2) tensor ([..., 0] = Re W, [..., 1] = Im W), so
that ``model.double()`` works (it would drop the imaginary part of a complex parameter). That
is 2n^2 stored reals for the n^2-dimensional unitary group; ``count_params`` counts n^2.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bench.errors import UnknownNameError

from .base import glorot_
from .complex_rnn import ComplexModReLURNN
from .urnn import fixed_permutation, restricted_unitary


def _init_rand(n: int) -> torch.Tensor:
    # Wisdom's default 'rand': one random set of restricted-uRNN factors, multiplied out
    theta = torch.empty(3, n, dtype=torch.float64).uniform_(-math.pi, math.pi)
    refl = glorot_(torch.empty(2, 2 * n, dtype=torch.float64))
    return restricted_unitary(theta, refl, fixed_permutation(n))


def _init_haar(n: int) -> torch.Tensor:
    # Haar-random unitary: QR of a complex Gaussian with the phases of R's diagonal removed
    Z = torch.complex(torch.randn(n, n, dtype=torch.float64), torch.randn(n, n, dtype=torch.float64))
    Q, R = torch.linalg.qr(Z)
    d = torch.diagonal(R)
    return Q * (d / d.abs()).unsqueeze(0)


INITS = {"rand": _init_rand, "haar": _init_haar, "identity": lambda n: torch.eye(n, dtype=torch.complex128)}


class FCURNN(ComplexModReLURNN):
    """Full-capacity uRNN.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: complex hidden size n (the real state has 2n entries).
        init: initial W: ``"rand"`` (product of random restricted-uRNN factors, the reference's
            default), ``"haar"`` (Haar-random) or ``"identity"``. Default: ``"rand"``.
        fast: run the recurrence with ``fastpath.recurrence`` (hand-written backward);
            ``False`` uses the plain autograd loop ``unitary.unroll``. Default: ``True``.

    Train the ``W`` group with the ``cayley`` (or ``cayley_rms``) optimizer; any Euclidean
    optimizer takes W off the unitary group at once.

    Example::

        >>> model = FCURNN(d_input=10, d_output=9, n_hidden=128)
        >>> model(torch.rand(2, 120, 10)).shape
        torch.Size([2, 120, 9])
    """

    name = "fcurnn"
    description = "full-capacity unitary RNN: dense unitary W, multiplicative Cayley step (drifts in float32)"
    paper = "Wisdom et al., NeurIPS 2016"
    groups = ("W", "other")
    # W is a unitary matrix: a Euclidean optimizer would walk it off the group
    manifold_groups = {"W": ("cayley", "cayley_rms")}
    # the reference's Cayley step is never re-projected: in float32 W drifts by about 1e-7 per step
    # at lr 1e-3 (8.9e-6 to 1.1e-5 after 100 steps over seeds 0-5, n=16), so it claims 1e-4, not 1e-5
    unitarity_tolerance = 1e-4
    default_opts = {"W": ("cayley", 1e-3), "other": ("rmsprop", 1e-3)}
    optimizer_semantics = {"*": "theano"}   # Wisdom's Theano rms_prop (optimizations.py) for the non-unitary weights

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, init: str = "rand", fast: bool = True):
        self.valid_hidden(n_hidden, init=init)
        super().__init__(d_input, d_output, n_hidden)
        self.fast = fast                                                                  # models/fastpath.py
        n = n_hidden
        self.W = nn.Parameter(torch.view_as_real(INITS[init](n)).float().contiguous())   # (n, n, 2)
        self.init_io(h0_bound=(3.0 / (2 * n)) ** 0.5)                                   # U is [Re V | Im V]

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, init: str = "rand") -> int:
        # unitary W n^2 + bias n + h0 2n + input 2nm + readout 2np + p
        return n * n + 3 * n + 2 * n * (d_input + d_output) + d_output

    @classmethod
    def valid_hidden(cls, n: int, *, init: str = "rand") -> None:
        if init not in INITS:
            raise UnknownNameError(f"fcurnn: unknown init {init!r}; known inits: {', '.join(INITS)}")
        super().valid_hidden(n)

    def count_params(self) -> int:
        # W stores 2n^2 reals for the n^2-dimensional unitary group
        return super().count_params() - self.n_hidden ** 2

    def param_groups(self):
        return {"W": [self.W], "other": self.io_parameters()}

    def recurrent_matrix(self) -> torch.Tensor:
        """Complex (n, n) W (a view of the stored parameter), row convention."""
        return torch.view_as_complex(self.W)
