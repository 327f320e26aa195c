"""scuRNN: complex unitary RNN with the scaled Cayley transform (Maduranga et al., AAAI 2019).

W = (I + A)^{-1} (I - A) D, A skew-Hermitian, D = diag(e^{i theta}) with trainable theta,
modReLU activation with the reference's ε, trainable h0, readout on the 2n features
[Re h | Im h] (Gayan225/scuRNN scuRNN.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .complex_rnn import ComplexModReLURNN
from .unitary import cayley_block_init, scale_grad, scaled_cayley, skew_hermitian, unitarity_error


class SCURNN(ComplexModReLURNN):
    """scuRNN.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: complex hidden size n (the real state has 2n entries).
        reference_gradient: scale the A-gradient as the paper's Theorem 2 does (its DFA is half
            the free-parameter gradient off the diagonal, scuRNN_mnist.py's Cayley_Transform_Deriv). Adaptive
            optimizers cancel the factor up to their ε. Default: ``True``.
        init_high: Re A is Cayley-block initialised with u ~ U(0, init_high). Default: π/2.
        solve_dtype: dtype for building W (the reference builds it in float64).
            Default: ``torch.complex128``.
        fast: run the recurrence with ``fastpath.recurrence`` (hand-written backward); ``False``
            uses the plain autograd loop ``unitary.unroll``, the reference the tests compare
            against (recording for diagnostics uses it too). Default: ``True``.

    Example::

        >>> model = SCURNN(d_input=1, d_output=10, n_hidden=116)
        >>> model(torch.rand(2, 784, 1)).shape
        torch.Size([2, 784, 10])
    """

    name = "scurnn"
    description = "complex unitary RNN, scaled Cayley transform with trainable diagonal D = diag(e^{iθ})"
    paper = "Maduranga, Helfrich & Ye, AAAI 2019"
    groups = ("A", "D", "other")
    optimizer_semantics = {"A": "scurnn", "*": "tf"}   # scuRNN_mnist.py: NumPy Update_step_A for A, TF1 for the rest

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, reference_gradient: bool = True,
                 init_high: float = math.pi / 2, solve_dtype: torch.dtype = torch.complex128,
                 fast: bool = True):
        super().__init__(d_input, d_output, n_hidden)
        self.fast = fast
        n = n_hidden
        self.solve_dtype = solve_dtype
        self.A_re = nn.Parameter(cayley_block_init(n, high=init_high).float())   # strict upper of Re A
        self.A_im = nn.Parameter(torch.zeros(n * (n + 1) // 2))                  # upper+diag of Im A
        self.theta = nn.Parameter(torch.rand(n) * 2 * math.pi)
        self.init_io(h0_bound=0.01)                                              # h0 away from modReLU's singular zone
        rows, cols = torch.triu_indices(n, n, offset=0)
        self.reference_gradient = reference_gradient
        self.register_buffer("_im_grad_scale", torch.where(rows == cols, 1.0, 0.5), persistent=False)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, **options) -> int:
        # A: n(n-1) off-diagonal reals + n imaginary diagonal = n^2; theta n; modReLU bias n;
        # U 2nm; readout 2np + p; h0 2n.
        return n * n + n + n + 2 * n * d_input + 2 * n * d_output + d_output + 2 * n

    def param_groups(self):
        return {"A": [self.A_re, self.A_im], "D": [self.theta], "other": self.io_parameters()}

    def skew_hermitian_A(self) -> torch.Tensor:
        re, im = self.A_re, self.A_im
        if self.reference_gradient:
            re = scale_grad(re, 0.5)
            im = scale_grad(im, self._im_grad_scale.to(im.dtype))
        return skew_hermitian(re, im, self.n_hidden)

    def recurrent_matrix(self) -> torch.Tensor:
        """Complex (n, n) unitary W, for the row convention h_t = ... + h_{t-1} W."""
        A = self.skew_hermitian_A()
        d = torch.polar(torch.ones_like(self.theta), self.theta)
        solve = self.solve_dtype if self.A_re.dtype != torch.float64 else torch.complex128
        return scaled_cayley(A, d, solve_dtype=solve)

    @torch.no_grad()
    def unitarity_error(self) -> float:
        return unitarity_error(self.recurrent_matrix().to(torch.complex128 if self.A_re.dtype == torch.float64 else torch.complex64))
