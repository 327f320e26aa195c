"""oRNN: orthogonal RNN from k Householder reflections (Mhammedi et al., ICML 2017; zmhammedi/Orthogonal_RNN).

W = H(u_1) ... H(u_k), H(u) = I - 2uu^T/|u|^2, with the u_j the columns of a lower-triangular
n x k matrix (column j zero above row j). Only the kn - k(k-1)/2 free entries are stored.
W is built once per forward pass in the compact WY form I - U T^{-1} U^T,
T = triu(U^T U, 1) + diag(U^T U)/2, then the recurrence is one GEMM per step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import InvalidHiddenSizeError

from .base import RecurrentModel
from .fastpath import recurrence
from .unitary import unitarity_error, unroll

SLOPE = 0.1         # the leaky ReLU's negative slope (the reference's default)


def householder_wy(U: torch.Tensor) -> torch.Tensor:
    """H(u_1) ... H(u_k) for the columns of U (n, k), by the compact WY form (no normalisation needed)."""
    G = U.T @ U
    T = torch.triu(G, diagonal=1) + torch.diag(torch.diagonal(G)) / 2
    return torch.eye(U.shape[0], dtype=U.dtype, device=U.device) - U @ torch.linalg.solve_triangular(T, U.T, upper=True)


class ORNN(RecurrentModel):
    """oRNN with leaky-ReLU (slope 0.1), as the reference's default.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n.
        k: number of reflections, 1 <= k <= n. Default: ``None`` (k = n, full capacity).
        normalize: renormalise the reflection vectors to unit norm after every optimizer step,
            as the reference does (W does not depend on their norms). Default: ``True``.
        fast: run the recurrence with ``fastpath.recurrence`` (hand-written backward);
            ``False`` uses the plain autograd loop ``unitary.unroll``. Default: ``True``.

    Example::

        >>> model = ORNN(d_input=2, d_output=1, n_hidden=128, k=16)
        >>> model(torch.rand(2, 200, 2)).shape
        torch.Size([2, 200, 1])
    """

    name = "ornn"
    description = "orthogonal RNN: product of k Householder reflections (compact WY form), leaky ReLU"
    paper = "Mhammedi, Hellicar, Rahman & Bailey, ICML 2017"
    groups = ("W", "other")
    default_opts = {"W": ("adam", 1e-3), "other": ("adam", 1e-3)}
    optimizer_semantics = {"*": "torch"}   # sgd.py's Adam (0.9, 0.999, 1e-8); form not pinned down: PyTorch's

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, k: int | None = None, normalize: bool = True,
                 fast: bool = True):
        self.valid_hidden(n_hidden, k=k)
        super().__init__(d_input, d_output, n_hidden)
        n = n_hidden
        self.fast = fast                                                      # models/fastpath.py
        self.k = n if k is None else k
        self.normalize = normalize
        rows, cols = torch.tril_indices(n, self.k)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.reflections = nn.Parameter(torch.randn(rows.numel()) * 0.01)     # free entries of tril(U)
        self._normalize_columns()
        bound_in, bound_out = (6.0 / (d_input + n)) ** 0.5, (6.0 / (d_output + n)) ** 0.5
        self.V = nn.Parameter(torch.empty(d_input, n).uniform_(-bound_in, bound_in))
        self.bias = nn.Parameter(torch.zeros(n))
        bound_h = (3.0 / (2 * n)) ** 0.5
        self.h0 = nn.Parameter(torch.empty(1, n).uniform_(-bound_h, bound_h))
        self.readout = nn.Linear(n, d_output)
        with torch.no_grad():
            self.readout.weight.uniform_(-bound_out, bound_out)
            self.readout.bias.zero_()

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, k: int | None = None, normalize: bool = True) -> int:
        k = n if k is None else k
        # reflections kn - k(k-1)/2, input nm, bias n, readout np + p, h0 n
        return k * n - k * (k - 1) // 2 + n * d_input + n + n * d_output + d_output + n

    @classmethod
    def check_options(cls, *, k: int | None = None, normalize: bool = True) -> None:
        """The errors that do not depend on n (raised as they are by ``hidden_for_budget``)."""
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InvalidHiddenSizeError(f"ornn: number of reflections k must be a positive integer, got {k!r}")

    @classmethod
    def valid_hidden(cls, n: int, *, k: int | None = None, normalize: bool = True) -> None:
        super().valid_hidden(n)
        cls.check_options(k=k, normalize=normalize)
        if k is not None and k > n:
            raise InvalidHiddenSizeError(
                f"ornn: number of reflections k={k} exceeds the hidden size n={n}; allowed: 1 <= k <= n")

    def param_groups(self):
        return {"W": [self.reflections], "other": [self.V, self.bias, self.h0, *self.readout.parameters()]}

    def householder_vectors(self) -> torch.Tensor:
        """The lower-triangular (n, k) matrix whose columns are the reflection vectors."""
        U = self.reflections.new_zeros(self.n_hidden, self.k)
        return U.index_put((self.rows, self.cols), self.reflections)

    def recurrent_matrix(self) -> torch.Tensor:
        """Orthogonal (n, n) matrix for the row convention: (H(u_1)...H(u_k))^T."""
        return householder_wy(self.householder_vectors()).T

    @torch.no_grad()
    def _normalize_columns(self) -> None:
        norms = torch.zeros(self.k, dtype=self.reflections.dtype, device=self.reflections.device)
        norms.index_add_(0, self.cols, self.reflections ** 2)
        self.reflections.div_(norms.sqrt().clamp_min(1e-12)[self.cols])

    def post_step(self) -> None:
        if self.normalize:
            self._normalize_columns()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        W = self.recurrent_matrix()                                     # built once per forward
        xu = x @ self.V + self.bias
        if self.fast_now:
            hs = recurrence(xu, self.h0, W, None, "leaky_relu", slope=SLOPE)
        else:
            hs = unroll(xu, self.h0, W, lambda z: F.leaky_relu(z, SLOPE), self.step_record())
        return self.readout(hs)

    @torch.no_grad()
    def unitarity_error(self) -> float:
        return unitarity_error(self.recurrent_matrix())
