"""nnRNN: non-normal RNN, W = P (Λ + T) Pᵀ in real Schur form (Kerg et al., NeurIPS 2019).

Code: KyleGoyette/nnRNN (RNN_Cell.py ``OrthoRNNCell``, utils.py ``select_optimizer``, copytask.py,
sMNIST.py). P = exp(A) is orthogonal, A skew-symmetric from its n(n-1)/2 free entries (expRNN's
parametrisation; the reference's hand-made ``orthogonal_step`` gradient for ``log_P`` is
autograd's through ``matrix_exp``, its symmetric part cancelling). Λ is block-diagonal with 2x2
blocks α_k R(θ_k) (eigenvalues α_k e^{±iθ_k}), T is strictly upper triangular (the non-normal
part), h_t = σ(x_t U + h_{t-1} W) with σ = real modReLU (or tanh), h0 = 0, readout on h_t.

The reference's two penalties act on the gradient, as they do there:

- ``delta`` δ Σ_k (α_k - 1)² (``alpha_loss``, added to the loss): pulls the eigenvalue moduli to 1;
- ``T_decay`` λ T (torch RMSprop's ``weight_decay`` on T's parameter group): L2 decay of T.

The harness has no loss hook for a model, so both gradients are added in the backward pass
(``add_grad``): the optimizer sees exactly the reference's gradient, the logged loss is the task
loss alone. Both vanish at initialisation (α = 1, T = 0).

T's mask: the reference's ``triu(ones, 1)`` also frees the entry (2k, 2k+1) inside each 2x2
block of Λ, so once it is trained W's eigenvalues are those of the blocks
[[α cos θ, t - α sin θ], [α sin θ, α cos θ]], not α e^{±iθ}. ``block_triangular=True`` leaves
those n/2 entries out: then Λ + T is a real Schur form and W's eigenvalues are exactly Λ's.

Deviations from the released code, each a bug there: ``log_P`` is initialised as the paper
(App. A.1, A.2) says (RNN_Cell.py hands the initialiser's matrix to ``_B(gradients=...)``,
which ignores it and exponentiates the uninitialised ``log_P``); ``henaff`` is expRNN's
U(-π, π) blocks (the nnRNN copy draws U(-π, 0)); at initialisation P's block rotations
commute with Λ's, so W = Λ whichever is used.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bench.errors import ConfigError, InvalidHiddenSizeError, UnknownNameError

from .base import RecurrentModel
from .exprnn import INITS
from .fastpath import recurrence
from .unitary import expm_skew, modrelu_real, skew_symmetric, unroll

NONLINEARITIES = ("modrelu", "tanh")


class _AddGrad(torch.autograd.Function):
    """Identity in the forward pass; adds ``extra`` to the incoming gradient."""

    @staticmethod
    def forward(ctx, x, extra):
        ctx.save_for_backward(extra)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (extra,) = ctx.saved_tensors
        return grad + extra, None


def add_grad(x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """``x``, whose gradient gets ``extra`` added: the gradient of a penalty on ``x`` without
    adding the penalty to the loss (once per backward through the result)."""
    return _AddGrad.apply(x, extra.detach())


def block_rotations(alpha: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Λ: (n, n) block-diagonal, block k = α_k [[cos θ_k, -sin θ_k], [sin θ_k, cos θ_k]] (RNN_Cell.py calc_D)."""
    n = 2 * alpha.shape[0]
    i = torch.arange(0, n, 2, device=alpha.device)
    c, s = alpha * torch.cos(theta), alpha * torch.sin(theta)
    rows, cols = torch.cat([i, i, i + 1, i + 1]), torch.cat([i, i + 1, i, i + 1])
    return alpha.new_zeros(n, n).index_put((rows, cols), torch.cat([c, -s, s, c]))


def upper_indices(n: int, block_triangular: bool, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of T's free entries: the strict upper triangle, without (2k, 2k+1) if ``block_triangular``."""
    rows, cols = torch.triu_indices(n, n, offset=1, device=device)
    if block_triangular:
        keep = ~((rows % 2 == 0) & (cols == rows + 1))
        rows, cols = rows[keep], cols[keep]
    return rows, cols


class NNRNN(RecurrentModel):
    """nnRNN.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n, even (Λ is made of 2x2 blocks).
        nonlin: ``"modrelu"`` (sign(z) ReLU(|z| + b), the scripts' ``--nonlin`` default and the
            paper's choice for every non-gated model, App. A.1) or ``"tanh"``. Default: ``"modrelu"``.
        init: P's log, ``"henaff"`` or ``"cayley"`` blocks as exprnn's (scripts' ``--rinit``
            default henaff; the paper used Cayley on psMNIST). Default: ``"henaff"``.
        delta: δ of the penalty δ Σ (α_k - 1)² (the scripts' ``--alam`` default 0.0001; the
            paper's copy-task row, App. Table 2). Default: ``1e-4``.
        T_decay: L2 decay λ of T (``--Tdecay``: copytask.py and adding_problem.py default
            ``10e-6`` = 1e-5; sMNIST.py 0; App. Tables 2-3: 1e-6 copy, 1e-4 psMNIST).
            Default: ``1e-5``.
        block_triangular: keep T out of Λ's 2x2 blocks, so that W's eigenvalues are exactly
            α_k e^{±iθ_k} (the reference's mask lets T fill (2k, 2k+1)). Default: ``False``.
        fast: run the recurrence through models/fastpath.py. Default: ``True``.

    Example::

        >>> model = NNRNN(d_input=1, d_output=10, n_hidden=128)
        >>> model(torch.rand(2, 784, 1)).shape
        torch.Size([2, 784, 10])
    """

    name = "nnrnn"
    description = "non-normal RNN, W = P (Λ + T) Pᵀ: orthogonal P = exp(A), 2x2 rotation blocks Λ, strictly upper T"
    paper = "Kerg, Goyette, Puelma Touzel, Gidel, Vorontsov, Bengio & Lajoie, NeurIPS 2019"
    groups = ("P", "T", "other")
    hidden_step = 2
    default_hidden = 128                     # copytask.py --nhid (sMNIST.py: 512)
    # utils.py select_optimizer: RMSprop(lr) on everything but log_P, P and T (Λ's α, θ included),
    # RMSprop(lr, weight_decay=Tdecay) on T, RMSprop(lr_orth) on log_P; scripts' defaults
    # --lr 2e-4, --lr_orth 2e-5, --alpha 0.99 (torch's; copytask.py, sMNIST.py, adding_problem.py)
    default_opts = {"P": ("rmsprop", 2e-5), "T": ("rmsprop", 2e-4), "other": ("rmsprop", 2e-4)}
    optimizer_semantics = {"*": "torch"}    # torch.optim.RMSprop / Adam (utils.py)

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, nonlin: str = "modrelu", init: str = "henaff",
                 delta: float = 1e-4, T_decay: float = 1e-5, block_triangular: bool = False, fast: bool = True):
        self.valid_hidden(n_hidden, nonlin=nonlin, init=init, delta=delta, T_decay=T_decay,
                          block_triangular=block_triangular)
        super().__init__(d_input, d_output, n_hidden)
        self.fast = fast                                                  # models/fastpath.py
        self.nonlin, self.delta, self.T_decay, self.block_triangular = nonlin, delta, T_decay, block_triangular
        n = n_hidden
        rows, cols = upper_indices(n, block_triangular)
        self.register_buffer("T_rows", rows, persistent=False)
        self.register_buffer("T_cols", cols, persistent=False)
        self.log_P = nn.Parameter(INITS[init](n).float())                 # strict upper triangle of P's log
        self.T = nn.Parameter(torch.zeros(rows.numel()))                  # UppT starts at 0
        self.theta = nn.Parameter(torch.rand(n // 2) * 2 * math.pi)      # U(0, 2·3.14) in RNN_Cell.py
        self.alpha = nn.Parameter(torch.ones(n // 2))                    # uniform(1, 1) in RNN_Cell.py
        # OrthoRNNCell never applies its i_initializer: U keeps nn.Linear's default, U(±1/sqrt(m))
        self.U = nn.Parameter(torch.empty(d_input, n).uniform_(-1 / math.sqrt(d_input), 1 / math.sqrt(d_input)))
        if nonlin == "modrelu":
            self.bias = nn.Parameter(torch.empty(n).uniform_(-0.01, 0.01))   # expRNN's modrelu init
        self.register_buffer("h0", torch.zeros(1, n))
        self.readout = nn.Linear(n, d_output)                             # default bias init, as the scripts
        nn.init.xavier_normal_(self.readout.weight)                       # copytask.py, adding_problem.py

    # -- counting and checking -------------------------------------------------------------
    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, nonlin: str = "modrelu",
                 block_triangular: bool = False) -> int:
        # log P n(n-1)/2, T n(n-1)/2 (- n/2 in-block entries), θ n/2, α n/2, input nm, readout np + p,
        # modReLU bias n
        count = n * (n - 1) + n + n * d_input + n * d_output + d_output
        return count + (n if nonlin == "modrelu" else 0) - (n // 2 if block_triangular else 0)

    @classmethod
    def check_options(cls, *, nonlin: str = "modrelu", init: str = "henaff", delta: float = 1e-4,
                      T_decay: float = 1e-5, block_triangular: bool = False) -> None:
        if nonlin not in NONLINEARITIES:
            raise UnknownNameError(f"nnrnn: unknown nonlin {nonlin!r}; known nonlinearities: {', '.join(NONLINEARITIES)}")
        if init not in INITS:
            raise UnknownNameError(f"nnrnn: unknown init {init!r}; known inits: {', '.join(INITS)}")
        for label, value in (("delta", delta), ("T_decay", T_decay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
                raise ConfigError(f"nnrnn: {label} must be a finite number >= 0, got {value!r}")
        if not isinstance(block_triangular, bool):
            raise ConfigError(f"nnrnn: option block_triangular must be true or false, got {block_triangular!r}")

    @classmethod
    def valid_hidden(cls, n: int, *, nonlin: str = "modrelu", init: str = "henaff", delta: float = 1e-4,
                     T_decay: float = 1e-5, block_triangular: bool = False) -> None:
        cls.check_options(nonlin=nonlin, init=init, delta=delta, T_decay=T_decay, block_triangular=block_triangular)
        if n % 2:
            raise InvalidHiddenSizeError(f"nnrnn: hidden size must be even (Λ is made of 2x2 rotation blocks), "
                                         f"got n={n}; try {n - 1} or {n + 1}")

    def param_groups(self):
        rest = [self.theta, self.alpha, self.U, *([self.bias] if self.nonlin == "modrelu" else []),
                *self.readout.parameters()]
        return {"P": [self.log_P], "T": [self.T], "other": rest}

    # -- the recurrent matrix --------------------------------------------------------------
    def orthogonal_factor(self) -> torch.Tensor:
        """P = exp(A), (n, n) orthogonal."""
        return expm_skew(skew_symmetric(self.log_P, self.n_hidden))

    def schur_factor(self) -> torch.Tensor:
        """Λ + T: (n, n) block upper triangular, the penalties' gradients attached to α and T."""
        alpha, T = self.alpha, self.T
        if torch.is_grad_enabled():
            if self.delta:                        # d/dα of δ Σ (α - 1)²
                alpha = add_grad(alpha, 2 * self.delta * (alpha - 1))
            if self.T_decay:                      # RMSprop's weight_decay: g + λ T
                T = add_grad(T, self.T_decay * T)
        upper = T.new_zeros(self.n_hidden, self.n_hidden).index_put((self.T_rows, self.T_cols), T)
        return block_rotations(alpha, self.theta) + upper

    def recurrent_matrix(self) -> torch.Tensor:
        """W = P (Λ + T) Pᵀ, row convention (h_t = ... + h_{t-1} W), as RNN_Cell.py calc_rec."""
        P = self.orthogonal_factor()
        return P @ self.schur_factor() @ P.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        W = self.recurrent_matrix()                                       # built once per forward
        xu = x @ self.U
        modrelu = self.nonlin == "modrelu"
        if self.fast_now:
            hs = recurrence(xu, self.h0, W, self.bias if modrelu else None, "modrelu_real" if modrelu else "tanh")
        elif modrelu:
            hs = unroll(xu, self.h0, W, lambda z: modrelu_real(z, self.bias), self.step_record(self.bias))
        else:
            hs = unroll(xu, self.h0, W, torch.tanh, self.step_record())
        return self.readout(hs)
