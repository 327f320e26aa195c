"""dtriv: dynamic trivialization W = B exp(A) (Lezcano-Casado, NeurIPS 2019; lezcano/expRNN).

A is skew-symmetric (orthogonal W, expRNN's cell) or, with ``complex=True``, skew-Hermitian
(unitary W on the complex cell of scuRNN/uRNN: what lezcano/expRNN issue #8 asks for). Only A's
free entries are trained; the base B is a buffer. Every K optimizer steps ``post_step`` moves the
base to the current point and restarts A from 0: B <- B exp(A), A <- 0, which leaves W unchanged.

Schedule. The reference (parametrization.py, the ``B`` property and ``rebase``) rebases lazily
when it next builds B: in the forward pass of steps 0, K, 2K, ... (0-based), whose gradient is
then still the old chart's and is applied to A = 0. Here ``post_step`` rebases right after steps
1, K+1, 2K+1, ... (1-based): the same steps, each gradient applied in the chart it was computed
in. Before the first step B = I and A holds the init, as in expRNN. K = "inf" rebases once,
after the first step (the reference's ``K="infty"``, "we just update the base once": the paper's
DTRIV∞, not expRNN); K = 0 never rebases: W = exp(A), plain expRNN. Every M-th rebase (the
first counted) replaces B by its polar factor U Vᴴ (the reference's ``project``, by SVD) against
float32 drift. The optimizer state of A is kept across a rebase, as the reference keeps it
(its ``rebase`` only zeroes ``A.data``; post_step could not reach the optimizer anyway).

``torch.nn.utils.parametrizations.orthogonal(..., use_trivialization=True)`` implements the same
base change (``Q = base @ matrix_exp(X.tril() - X.tril().mH)``; assigning the weight to itself
rebases) but is not used: it trains a full n x n tensor (2n² reals when complex), so
``count_params()`` would count n² - n(n-1)/2 (complex: n²) dead entries, and its rebase silently
re-orthogonalises by QR whenever the base is off by more than 10·n·eps.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bench.errors import ConfigError, UnknownNameError

from .complex_rnn import ComplexModReLURNN
from .exprnn import INITS
from .orthogonal import RealModReLURNN
from .unitary import expm_skew, skew_hermitian, skew_symmetric

ONCE = math.inf                    # K: rebase after the first step only (dtriv∞)
NEVER = 0                          # K: never rebase (expRNN)
_INF_NAMES = ("inf", "infty", "infinity")


def rebase_period(K) -> int | float:
    """K as given (an int >= 0, ``"inf"``/``"infty"`` or ``float("inf")``) -> an int or ``ONCE``."""
    if isinstance(K, str) and K.strip().lower() in _INF_NAMES or isinstance(K, float) and K == math.inf:
        return ONCE
    if isinstance(K, bool) or not isinstance(K, int) or K < 0:
        raise ConfigError(f"dtriv: K must be an integer >= 0 (0: never rebase, plain expRNN) or \"inf\" "
                          f"(rebase once, the reference's K=infty), got {K!r}")
    return K


def polar(W: torch.Tensor) -> torch.Tensor:
    """The orthogonal/unitary matrix nearest to W (the polar factor U Vᴴ of its SVD)."""
    U, _, Vh = torch.linalg.svd(W)
    return U @ Vh


class DTRIV(RealModReLURNN, ComplexModReLURNN):
    """dtriv: expRNN with a moving base, on the real cell (orthogonal.py) or the complex one
    (complex_rnn.py: ``init_io``, ``states``), chosen by ``complex``.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n (complex: the complex dimension; the real state has 2n entries).
        complex: unitary W = B exp(A), A skew-Hermitian, on the complex modReLU cell with a
            trainable h0 (models/complex_rnn.py); else orthogonal W on expRNN's real cell.
            Default: ``False``.
        K: optimizer steps between changes of base; ``"inf"`` rebases once, after the first
            step; ``0`` never (plain expRNN). Default: ``100`` (lezcano/expRNN 2_mnist.py,
            ``--K`` default "100"; the same in 1_copying.py and 3_timit.py).
        M: project the base onto the group every M rebases; 0 never. Default: ``100``
            (2_mnist.py and 3_timit.py ``mode = ("dynamic", K, 100)``; 1_copying.py uses 30).
        init: A's initial 2x2 blocks, ``"henaff"`` or ``"cayley"`` as exprnn's (the real part
            of A when complex). Default: ``"henaff"``.
        fast: run the recurrence through models/fastpath.py. Default: ``True``.

    Example::

        >>> model = DTRIV(d_input=1, d_output=10, n_hidden=170, init="cayley")
        >>> model(torch.rand(2, 784, 1)).shape
        torch.Size([2, 784, 10])
    """

    name = "dtriv"
    description = "orthogonal (or unitary) RNN, W = B exp(A), base B moved to the current point every K steps"
    paper = "Lezcano-Casado, NeurIPS 2019"
    groups = ("A", "other")
    default_hidden = 170                     # 2_mnist.py --hidden_size, the papers' smallest MNIST model
    # the pMNIST row at n=170 (lezcano/expRNN README): lr 1e-3, lr_orth = lr/10, RMSprop both
    default_opts = {"A": ("rmsprop", 1e-4), "other": ("rmsprop", 1e-3)}
    optimizer_semantics = {"*": "torch"}   # lezcano/expRNN trains with PyTorch's RMSprop/Adam

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, complex: bool = False, K: int | str = 100,
                 M: int = 100, init: str = "henaff", fast: bool = True):
        self.valid_hidden(n_hidden, complex=complex, K=K, M=M, init=init)
        super().__init__(d_input, d_output, n_hidden)
        self.fast = fast                                                  # models/fastpath.py
        self.complex, self.K, self.M = complex, rebase_period(K), M
        n = n_hidden
        if complex:
            self.A_re = nn.Parameter(INITS[init](n).float())                # strict upper of Re A
            self.A_im = nn.Parameter(torch.zeros(n * (n + 1) // 2))         # upper + diagonal of Im A
            self.init_io(h0_bound=0.01)                                     # as scuRNN: h0 off modReLU's singular zero
            eye = torch.view_as_real(torch.eye(n, dtype=torch.complex64)).clone()
        else:
            # expRNN's cell and initialisation (models/exprnn.py)
            self.A = nn.Parameter(INITS[init](n).float())                   # strict upper triangle of A
            self.U = nn.Parameter(torch.randn(d_input, n) * math.sqrt(2.0 / d_input))   # Kaiming normal
            self.bias = nn.Parameter(torch.empty(n).uniform_(-0.01, 0.01))   # modReLU bias
            self.register_buffer("h0", torch.zeros(1, n))
            self.readout = nn.Linear(n, d_output)
            nn.init.kaiming_normal_(self.readout.weight, nonlinearity="relu")
            nn.init.zeros_(self.readout.bias)
            eye = torch.eye(n)
        # a complex base is stored as real (n, n, 2): Module.double() and .to(float64) keep it whole
        self.register_buffer("base", eye)
        self.steps, self.rebases = 0, 0                                   # in state_dict (extra state)

    # -- counting and checking -------------------------------------------------------------
    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, complex: bool = False) -> int:
        if complex:
            # A n^2 (n(n-1) off-diagonal reals + n imaginary diagonal), bias n, U 2nm, h0 2n, readout 2np + p
            return n * n + n + 2 * n * d_input + 2 * n + 2 * n * d_output + d_output
        # A n(n-1)/2, bias n, input nm, readout np + p (as exprnn)
        return n * (n - 1) // 2 + n + n * d_input + n * d_output + d_output

    @classmethod
    def check_options(cls, *, complex: bool = False, K: int | str = 100, M: int = 100, init: str = "henaff") -> None:
        if not isinstance(complex, bool):
            raise ConfigError(f"dtriv: option complex must be true or false, got {complex!r}")
        rebase_period(K)
        if isinstance(M, bool) or not isinstance(M, int) or M < 0:
            raise ConfigError(f"dtriv: M (rebases between projections of the base) must be an integer >= 0 "
                              f"(0: never project), got {M!r}")
        if init not in INITS:
            raise UnknownNameError(f"dtriv: unknown init {init!r}; known inits: {', '.join(INITS)}")

    @classmethod
    def valid_hidden(cls, n: int, *, complex: bool = False, K: int | str = 100, M: int = 100,
                     init: str = "henaff") -> None:
        cls.check_options(complex=complex, K=K, M=M, init=init)
        super().valid_hidden(n)

    def param_groups(self):
        if self.complex:
            return {"A": [self.A_re, self.A_im], "other": self.io_parameters()}
        return {"A": [self.A], "other": [self.U, self.bias, *self.readout.parameters()]}

    # -- the recurrent matrix and the rebase -----------------------------------------------
    def log_matrix(self) -> torch.Tensor:
        """A: (n, n) skew-symmetric, or skew-Hermitian (complex) from its n^2 real entries."""
        if self.complex:
            return skew_hermitian(self.A_re, self.A_im, self.n_hidden)
        return skew_symmetric(self.A, self.n_hidden)

    def base_matrix(self) -> torch.Tensor:
        """B: (n, n) real, or complex (its real (n, n, 2) storage seen as complex)."""
        return torch.view_as_complex(self.base) if self.complex else self.base

    def recurrent_matrix(self) -> torch.Tensor:
        """W = B exp(A), row convention (h_t = ... + h_{t-1} W), as the reference's base.mm(expm(A))."""
        return self.base_matrix() @ expm_skew(self.log_matrix())

    @torch.no_grad()
    def rebase(self) -> None:
        """B <- B exp(A) (projected onto the group every M-th time), A <- 0: W is unchanged."""
        W = self.recurrent_matrix()
        self.rebases += 1
        if self.M and self.rebases % self.M == 0:
            W = polar(W)
        self.base.copy_(torch.view_as_real(W) if self.complex else W)
        for p in self.param_groups()["A"]:
            p.zero_()

    def post_step(self) -> None:
        """Count the optimizer step; rebase after steps 1, K+1, 2K+1, ... (K="inf": 1 only; K=0: never)."""
        self.steps += 1
        if self.K != NEVER and (self.steps == 1 or (self.K != ONCE and (self.steps - 1) % self.K == 0)):
            self.rebase()

    def get_extra_state(self) -> dict:
        return {"steps": self.steps, "rebases": self.rebases}

    def set_extra_state(self, state: dict) -> None:
        self.steps, self.rebases = int(state["steps"]), int(state["rebases"])

    # -- the recurrence --------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p): the cell of the chosen kind (RealModReLURNN comes first in the MRO)
        return (ComplexModReLURNN if self.complex else RealModReLURNN).forward(self, x)
