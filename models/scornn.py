"""scoRNN: real orthogonal RNN, scaled Cayley transform (Helfrich, Willmott & Ye, ICML 2018; SpartinStuff/scoRNN).

W = (I + A)^{-1} (I - A) D with A skew-symmetric (only its n(n-1)/2 free entries are stored)
and D = diag(+1 x (n - rho), -1 x rho) fixed, the -1 entries at the end. Autograd on the free
entries gives exactly the reference's DFA (Cayley_Transform_Deriv in scoRNN_mnist.py). W is
built once per forward, in float64 as the reference does, then cast.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.errors import InvalidHiddenSizeError

from .base import glorot_
from .orthogonal import RealModReLURNN
from .unitary import cayley_block_init, scaled_cayley, skew_symmetric


def n_negative(n: int, rho: int | None, rho_frac: float) -> int:
    """Number of -1 entries of D: ``rho`` if given, else ``round(rho_frac * n)``."""
    return rho if rho is not None else int(round(rho_frac * n))


class SCORNN(RealModReLURNN):
    """scoRNN.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n.
        rho: number of -1 entries of D, 0 <= rho <= n (the paper's ρ, the code's NEG-ONES).
            Default: ``None`` (use ``rho_frac``).
        rho_frac: rho as a fraction of n, used when ``rho`` is not given; the reference scripts
            use n/2 (copying, adding) and n/10 (MNIST). Default: ``0.5``.

    Example::

        >>> model = SCORNN(d_input=10, d_output=9, n_hidden=190, rho=95)
        >>> model(torch.rand(2, 120, 10)).shape
        torch.Size([2, 120, 9])
    """

    name = "scornn"
    description = "real orthogonal RNN, scaled Cayley transform with a fixed ±1 diagonal (rho negative ones)"
    paper = "Helfrich, Willmott & Ye, ICML 2018"
    groups = ("A", "other")
    default_opts = {"A": ("rmsprop", 1e-4), "other": ("rmsprop", 1e-3)}
    optimizer_semantics = {"*": "tf"}   # TF1 optimizers (tf.train.* in the scoRNN_*.py scripts)

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, rho: int | None = None, rho_frac: float = 0.5,
                 fast: bool = True):
        self.valid_hidden(n_hidden, rho=rho, rho_frac=rho_frac)
        super().__init__(d_input, d_output, n_hidden)
        self.fast = fast                                                  # models/fastpath.py
        n = n_hidden
        self.rho = n_negative(n, rho, rho_frac)
        self.register_buffer("d", torch.cat([torch.ones(n - self.rho), -torch.ones(self.rho)]))
        self.A = nn.Parameter(cayley_block_init(n).float())              # strict upper triangle of A
        self.U = nn.Parameter(torch.empty(d_input, n).uniform_(-0.01, 0.01))
        self.bias = nn.Parameter(torch.zeros(n))                         # modReLU bias
        self.register_buffer("h0", torch.zeros(1, n))
        self.readout = nn.Linear(n, d_output)
        glorot_(self.readout.weight.data.T)
        nn.init.zeros_(self.readout.bias)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, rho: int | None = None, rho_frac: float = 0.5) -> int:
        # A n(n-1)/2, bias n, input nm, readout np + p
        return n * (n - 1) // 2 + n + n * d_input + n * d_output + d_output

    @classmethod
    def check_options(cls, *, rho: int | None = None, rho_frac: float = 0.5) -> None:
        """The errors that do not depend on n (raised as they are by ``hidden_for_budget``)."""
        if rho is None:
            if isinstance(rho_frac, bool) or not isinstance(rho_frac, (int, float)) or not 0 <= rho_frac <= 1:
                raise InvalidHiddenSizeError(f"scornn: rho_frac must be a number in [0, 1], got {rho_frac!r}")
        elif isinstance(rho, bool) or not isinstance(rho, int) or rho < 0:
            raise InvalidHiddenSizeError(
                f"scornn: rho (number of -1 entries of D) must be a non-negative integer, got {rho!r}")

    @classmethod
    def valid_hidden(cls, n: int, *, rho: int | None = None, rho_frac: float = 0.5) -> None:
        super().valid_hidden(n)
        cls.check_options(rho=rho, rho_frac=rho_frac)
        if rho is not None and rho > n:
            raise InvalidHiddenSizeError(
                f"scornn: rho={rho} negative ones do not fit in D of size n={n}; allowed: 0 <= rho <= n")

    def param_groups(self):
        return {"A": [self.A], "other": [self.U, self.bias, *self.readout.parameters()]}

    def recurrent_matrix(self) -> torch.Tensor:
        """Orthogonal (n, n) W for the row convention h_t = ... + h_{t-1} W (reference's code form)."""
        A = skew_symmetric(self.A, self.n_hidden)
        return scaled_cayley(A, self.d.to(A.dtype), solve_dtype=torch.float64).to(A.dtype)
