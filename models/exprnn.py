"""expRNN: orthogonal W = exp(A), A skew-symmetric (Lezcano-Casado & Martínez-Rubio, ICML 2019; lezcano/expRNN).

Only the n(n-1)/2 free entries of A are stored; ``unitary.expm_skew`` (``torch.linalg.matrix_exp``
with a faster backward for skew A) builds W once per forward pass. Real modReLU, h0 = 0, readout on h. This is the plain expRNN
(base = I, no dtriv rebasing).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bench.errors import UnknownNameError

from .orthogonal import RealModReLURNN
from .unitary import cayley_block_init, expm_skew, skew_symmetric


def henaff_init(n: int) -> torch.Tensor:
    """Free entries of A with 2x2 blocks s ~ U(-π, π): exp(A) has eigenvalues e^{±is} uniform on the circle."""
    rows, cols = torch.triu_indices(n, n, offset=1)
    free = torch.zeros(rows.numel(), dtype=torch.float64)
    block = (rows % 2 == 0) & (cols == rows + 1)
    free[block] = torch.empty(int(block.sum()), dtype=torch.float64).uniform_(-math.pi, math.pi)
    return free


INITS = {"henaff": henaff_init, "cayley": lambda n: cayley_block_init(n)}


class EXPRNN(RealModReLURNN):
    """expRNN.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n.
        init: ``"henaff"`` (the reference's choice for copying and TIMIT) or ``"cayley"``
            (its choice for MNIST). Default: ``"henaff"``.

    Example::

        >>> model = EXPRNN(d_input=1, d_output=10, n_hidden=170, init="cayley")
        >>> model(torch.rand(2, 784, 1)).shape
        torch.Size([2, 784, 10])
    """

    name = "exprnn"
    description = "orthogonal RNN, W = matrix_exp(A) with A skew-symmetric"
    paper = "Lezcano-Casado & Martínez-Rubio, ICML 2019"
    groups = ("A", "other")
    default_opts = {"A": ("rmsprop", 1e-4), "other": ("rmsprop", 1e-3)}   # the reference's lr_orth = lr/10
    optimizer_semantics = {"*": "torch"}   # lezcano/expRNN's scripts use torch.optim.RMSprop/Adam with their defaults

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, init: str = "henaff", fast: bool = True):
        self.valid_hidden(n_hidden, init=init)
        super().__init__(d_input, d_output, n_hidden)
        self.fast = fast                                                  # models/fastpath.py
        n = n_hidden
        self.A = nn.Parameter(INITS[init](n).float())                     # strict upper triangle of A
        self.U = nn.Parameter(torch.randn(d_input, n) * math.sqrt(2.0 / d_input))   # Kaiming normal
        self.bias = nn.Parameter(torch.empty(n).uniform_(-0.01, 0.01))     # modReLU bias
        self.register_buffer("h0", torch.zeros(1, n))
        self.readout = nn.Linear(n, d_output)
        nn.init.kaiming_normal_(self.readout.weight, nonlinearity="relu")
        nn.init.zeros_(self.readout.bias)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, init: str = "henaff") -> int:
        # A n(n-1)/2, bias n, input nm, readout np + p
        return n * (n - 1) // 2 + n + n * d_input + n * d_output + d_output

    @classmethod
    def valid_hidden(cls, n: int, *, init: str = "henaff") -> None:
        if init not in INITS:
            raise UnknownNameError(f"exprnn: unknown init {init!r}; known inits: {', '.join(INITS)}")
        super().valid_hidden(n)

    def param_groups(self):
        return {"A": [self.A], "other": [self.U, self.bias, *self.readout.parameters()]}

    def recurrent_matrix(self) -> torch.Tensor:
        """Orthogonal (n, n) W = exp(A), row convention."""
        return expm_skew(skew_symmetric(self.A, self.n_hidden))
