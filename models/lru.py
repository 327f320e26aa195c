"""LRU: Linear Recurrent Unit (Orvieto et al., "Resurrecting Recurrent Neural Networks for Long
Sequences", ICML 2023), one block.

The recurrence is the paper's Appendix A code (``init_lru_parameters``, ``forward_LRU``); the
block around it is the one layer of NicolasZucchet/minimal-LRU (``lru/model.py``, ``SequenceLayer``),
the implementation the paper's block (Fig. 1: Norm-Recurrence-GLU-Skip) is usually run from,
less the normalisation and the skip connection, which belong to a stack of blocks::

    u_t = W_e x_t + b_e                          encoder Linear(m, H)
    h_t = λ ⊙ h_{t-1} + γ ⊙ (B u_t),  h_0 = 0     λ = exp(-exp(ν_log) + i exp(θ_log)), γ = exp(γ_log)
    y_t = Re(C h_t) + D ⊙ u_t                    B (N, H), C (H, N) complex; D (H,) real
    z_t = a ⊙ σ(b),  [a | b] = W_g GELU(y_t) + b_g   GLU over Linear(H, 2H)
    out_t = W_o z_t + b_o                        readout Linear(H, p) at every step

**n is H**, the model width: the encoder's output, the recurrence's input and output channels
and the readout's input. The state size N (complex) is the option ``d_state``. s4d's n is H
too, so the two diagonal models size the same way.

Parameter count (complex parameters are stored as real and imaginary tensors: 2 scalars each)::

    3N (ν_log, θ_log, γ_log) + 4NH (B, C) + H (D) + (m + 1)H (encoder)
      + 2H² + 2H (GLU) + Hp + p (readout)
    = 2H² + 4NH + 3N + (m + p + 4)H + p

Only the block's nonlinearity (GELU, then GLU) acts after the linear recurrence: the model is
nonlinear in its input, but any product of inputs it forms is a function of the linear state.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError, InvalidHiddenSizeError

from .base import RecurrentModel
from .scan import linear_scan, sequential_scan


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """flax ``nn.Dense``'s default kernel init: normal truncated at ±2σ, variance 1/fan_in."""
    # flax variance_scaling(1, "fan_in", "truncated_normal") divides by the std of the unit
    # normal truncated at ±2 (0.8796...) so the variance stays 1/fan_in
    std = math.sqrt(1.0 / weight.shape[1]) / 0.87962566103423978
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def flax_dense(d_in: int, d_out: int) -> nn.Linear:
    """A Linear initialised as flax ``nn.Dense`` (lecun-normal weight, zero bias), as minimal-LRU's."""
    layer = nn.Linear(d_in, d_out)
    with torch.no_grad():
        lecun_normal_(layer.weight)
        layer.bias.zero_()
    return layer


def ring_init(d_state: int, r_min: float, r_max: float, max_phase: float) -> tuple[torch.Tensor, ...]:
    """(ν_log, θ_log, γ_log): λ uniform on the ring r_min <= |λ| <= r_max with phase in [0, max_phase]
    (paper, Appendix A ``init_lru_parameters``); γ = sqrt(1 - |λ|²)."""
    # drawn in float64: the float32 grid of U(0, 1) hits 0 (ν_log = inf) once in 2^24 draws
    u1 = torch.rand(d_state, dtype=torch.float64)
    u2 = torch.rand(d_state, dtype=torch.float64)
    radius_sq = u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2           # |λ|² uniform: uniform in area
    nu_log = torch.log(-0.5 * torch.log(radius_sq))
    theta_log = torch.log(max_phase * u2)
    gamma_log = 0.5 * torch.log1p(-radius_sq)                         # log sqrt(1 - |λ|²)
    return nu_log.float(), theta_log.float(), gamma_log.float()


class LRU(RecurrentModel):
    """One LRU block with an encoder and a per-step linear readout.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: model width H (see the module docstring).
        d_state: complex state size N. Default: ``128`` (minimal-LRU's ``--d_hidden``; the
            paper's code takes N as an argument without a default).
        r_min, r_max: radii of the ring λ is drawn on. Default: ``0.0``, ``1.0`` (the paper's
            Appendix A ``init_lru_parameters``; its long-range tasks use e.g. 0.9, 0.999).
        max_phase: largest phase of λ. Default: ``6.28`` (Appendix A code; ~2π).
        fast: the parallel ``linear_scan`` if True, else the step loop ``sequential_scan``
            (same numbers to rounding). Default: ``True``.

    B and C are complex Gaussian (B: std 1/sqrt(2H) per real part, C: 1/sqrt(N)), D standard
    normal (Appendix A); encoder, GLU and readout are initialised as flax ``nn.Dense``
    (lecun normal, zero bias), as minimal-LRU's. h_0 = 0.

    Example::

        >>> model = LRU(d_input=2, d_output=1, n_hidden=32, r_min=0.9, r_max=0.999)
        >>> model(torch.rand(2, 200, 2)).shape
        torch.Size([2, 200, 1])
    """

    name = "lru"
    description = "Linear Recurrent Unit: complex diagonal linear recurrence, ring init, GELU+GLU block"
    paper = "Orvieto et al., ICML 2023"
    groups = ("A", "other")
    default_hidden = 256                     # minimal-LRU's --d_model
    # minimal-LRU (run_train.py, train_helpers.py): Adam at lr_base 1e-3 (AdamW, weight decay
    # 0.05 there) and, for ν, θ, γ (and B there), plain Adam at lr_factor 0.5 x lr_base, no
    # weight decay. The harness's adam has no weight decay.
    default_opts = {"A": ("adam", 5e-4), "other": ("adam", 1e-3)}
    optimizer_semantics = {"*": "torch"}     # no PyTorch reference code: PyTorch's optimizers

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, d_state: int = 128,
                 r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 6.28, fast: bool = True):
        self.check_options(d_state=d_state, r_min=r_min, r_max=r_max, max_phase=max_phase)
        super().__init__(d_input, d_output, n_hidden)
        self.fast = fast
        H, N = n_hidden, d_state
        self.encoder = flax_dense(d_input, H)
        nu_log, theta_log, gamma_log = ring_init(N, r_min, r_max, max_phase)
        self.nu_log = nn.Parameter(nu_log)
        self.theta_log = nn.Parameter(theta_log)
        self.gamma_log = nn.Parameter(gamma_log)          # trainable, as in the paper's code
        # "Glorot initialized" input/output matrices (Appendix A): complex B with E|B_ij|² = 1/H
        self.B_re = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H))
        self.glu = flax_dense(H, 2 * H)                   # minimal-LRU's out1, out2 stacked
        self.readout = flax_dense(H, d_output)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, d_state: int = 128) -> int:
        H, N = n, d_state
        # ν, θ, γ 3N; B, C 4NH; D H; encoder (m+1)H; GLU 2H² + 2H; readout Hp + p
        return 3 * N + 4 * N * H + H + (d_input + 1) * H + 2 * H * H + 2 * H + H * d_output + d_output

    @classmethod
    def check_options(cls, *, d_state: int = 128, r_min: float = 0.0, r_max: float = 1.0,
                      max_phase: float = 6.28) -> None:
        """The errors that do not depend on n (raised as they are by ``hidden_for_budget``)."""
        if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 1:
            raise InvalidHiddenSizeError(f"lru: state size d_state must be a positive integer, got {d_state!r}")
        numbers = {"r_min": r_min, "r_max": r_max, "max_phase": max_phase}
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"lru: {key} must be a finite number, got {value!r}")
        # |λ| = 1 (r_min = r_max = 1) has no γ = sqrt(1 - |λ|²) > 0 and no finite ν_log
        if not 0 <= r_min <= r_max <= 1 or r_min >= 1:
            raise ConfigError(f"lru: ring radii must satisfy 0 <= r_min <= r_max <= 1 and r_min < 1, "
                              f"got r_min={r_min!r}, r_max={r_max!r}")
        if max_phase <= 0:
            raise ConfigError(f"lru: max_phase must be positive (θ_log = log(max_phase * u)), got {max_phase!r}")

    @classmethod
    def valid_hidden(cls, n: int, *, d_state: int = 128) -> None:
        super().valid_hidden(n)
        cls.check_options(d_state=d_state)

    def param_groups(self):
        recurrence = [self.nu_log, self.theta_log, self.gamma_log]
        return {"A": recurrence,
                "other": [p for p in self.parameters() if all(p is not q for q in recurrence)]}

    def eigenvalues(self) -> torch.Tensor:
        """The diagonal λ (N,) of the recurrence, complex."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        u = self.encoder(x)                                               # (B, L, H)
        gamma = torch.exp(self.gamma_log).unsqueeze(-1)
        # γ ⊙ (B u): u is real, so two real products instead of one complex one
        bu = torch.complex(u @ (gamma * self.B_re).T, u @ (gamma * self.B_im).T)   # (B, L, N)
        if self.fast_now:
            h = linear_scan(self.eigenvalues(), bu)
        else:
            h = sequential_scan(self.eigenvalues(), bu, record=self.step_record())
        y = h.real @ self.C_re.T - h.imag @ self.C_im.T + self.D * u      # Re(C h) + D ⊙ u
        # minimal-LRU applies flax's nn.gelu, whose default is the tanh approximation
        z = F.glu(self.glu(F.gelu(y, approximate="tanh")), dim=-1)
        return self.readout(z)
