"""S4D: diagonal state space layer (Gu, Gupta, Goel & Ré, "On the Parameterization and
Initialization of Diagonal State Space Models", NeurIPS 2022), one layer.

The layer is the standalone ``S4D`` of state-spaces/s4 (``models/s4/s4d.py``): per channel h a
diagonal SSM of N/2 complex modes (conjugate pairs, hence the factor 2 on the real part),
S4D-Lin initialisation, zero-order hold, a D skip, then GELU and a GLU output Linear. Around it,
as the repository's ``example.py``, an encoder Linear(m, H) and a linear readout (here at every
step; the normalisation, dropout and residual of ``example.py`` belong to its stack)::

    u_t = W_e x_t + b_e                              encoder Linear(m, H)
    A = -exp(log_A_real) + i A_imag                  (H, N/2); S4D-Lin: -1/2 + iπk, k = 0..N/2-1
    Ā = exp(Δ A),  B̄ = (exp(Δ A) - 1) / A           ZOH with B = 1, Δ = exp(log_dt) (H,)
    s_t = Ā ⊙ s_{t-1} + B̄ u_t,  s_0 = 0              per channel h and mode k
    y_t = 2 Re(Σ_k C_k s_t,k) + D ⊙ u_t              C (H, N/2) complex, D (H,)
    z_t = a ⊙ σ(b),  [a | b] = W_g GELU(y_t) + b_g   GELU, then Conv1d(H, 2H, 1) + GLU
    out_t = W_o z_t + b_o                            readout Linear(H, p)

Unrolled, y = K * u + D ⊙ u, a causal convolution with the kernel (the recurrence's impulse response)

    K_l = 2 Re(Σ_k C_k B̄_k Ā_k^l),  l = 0..L-1       (H, L)

``fast=True`` (the default) computes y as the official layer does (``S4DKernel.forward`` and
``S4D.forward`` in ``models/s4/s4d.py``): K from the Vandermonde matrix exp(Δ A l) (H, N/2, L),
then the convolution by FFT (rfft of u and K at length 2L, product, irfft, the first L steps),
plus the D skip. It never forms the states: its memory is O(B L H + H N L) where the recurrence's is
the (B, L, H, N/2) complex states (a parallel scan keeps log2(L) copies of them for autograd,
several GB at pixel-MNIST scale). ``fast=False`` is the recurrence one step at a time
(``models/scan.py``'s ``sequential_scan``); the two agree in float64 to rounding, outputs and
gradients. In float32, as in the official code, exp(Δ A l) carries a phase error of about
|Δ A l| · 6e-8 at large l.

**n is H**, the number of channels. The state size N per channel (N/2 complex modes) is the
option ``d_state``.

Parameter count (C stored as real and imaginary parts)::

    H N/2 (log_A_real) + H N/2 (A_imag) + H (log_dt) + H N (C) + H (D) + (m + 1)H (encoder)
      + 2H² + 2H (GLU) + Hp + p (readout)
    = 2H² + 2NH + (m + p + 5)H + p
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError, InvalidHiddenSizeError

from .base import RecurrentModel
from .scan import sequential_scan


class S4D(RecurrentModel):
    """One S4D layer with an encoder and a per-step linear readout.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: channels H (see the module docstring).
        d_state: state size N per channel, even (N/2 complex modes). Default: ``64``
            (``S4D(d_state=64)`` in the official file).
        dt_min, dt_max: log_dt is drawn uniformly in [log dt_min, log dt_max]. Default:
            ``1e-3``, ``1e-1`` (``S4DKernel`` in the official file).
        fast: the official FFT convolution with the kernel K if True, else the recurrence
            step by step (``sequential_scan``; same numbers to rounding, far more memory and
            time). Default: ``True``.

    As the official file: C complex standard normal (E|C|² = 1), D standard normal;
    encoder, GLU and readout are PyTorch's default Linear (Conv1d with kernel 1 has the same
    init). s_0 = 0.

    Example::

        >>> model = S4D(d_input=1, d_output=10, n_hidden=64, d_state=32)
        >>> model(torch.rand(2, 784, 1)).shape
        torch.Size([2, 784, 10])
    """

    name = "s4d"
    description = "S4D diagonal state space layer (S4D-Lin, ZOH) as an FFT convolution, GELU+GLU"
    paper = "Gu, Gupta, Goel & Ré, NeurIPS 2022"
    groups = ("A", "other")
    default_hidden = 128                     # example.py's --d_model
    # state-spaces/s4 example.py: AdamW at lr 0.01 (weight decay 0.01); the SSM's log_dt,
    # log_A_real and A_imag at lr min(0.001, lr) with no weight decay (S4DKernel.register).
    # The harness's adam has no weight decay.
    default_opts = {"A": ("adam", 1e-3), "other": ("adam", 1e-2)}
    optimizer_semantics = {"*": "torch"}     # the official code trains with PyTorch's optimizers

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, d_state: int = 64,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, fast: bool = True):
        self.check_options(d_state=d_state, dt_min=dt_min, dt_max=dt_max)
        super().__init__(d_input, d_output, n_hidden)
        self.fast = fast
        H, modes = n_hidden, d_state // 2
        self.encoder = nn.Linear(d_input, H)
        log_dt = torch.rand(H, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt.float())
        # S4D-Lin: A_k = -1/2 + iπk, both parts trainable (as the official file)
        self.log_A_real = nn.Parameter(torch.full((H, modes), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(H, 1))
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, modes, dtype=torch.cfloat)).clone())   # (H, N/2, 2)
        self.D = nn.Parameter(torch.randn(H))
        self.glu = nn.Linear(H, 2 * H)            # the official Conv1d(H, 2H, kernel_size=1)
        self.readout = nn.Linear(H, d_output)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, d_state: int = 64) -> int:
        H, N = n, d_state
        # A (real and imaginary) HN, log_dt H, C HN, D H, encoder (m+1)H, GLU 2H² + 2H, readout Hp + p
        return H * N + H + H * N + H + (d_input + 1) * H + 2 * H * H + 2 * H + H * d_output + d_output

    @classmethod
    def check_options(cls, *, d_state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        """The errors that do not depend on n (raised as they are by ``hidden_for_budget``)."""
        if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 2 or d_state % 2:
            raise InvalidHiddenSizeError(
                f"s4d: state size d_state must be a positive even integer (N/2 conjugate-pair modes), got {d_state!r}")
        for key, value in (("dt_min", dt_min), ("dt_max", dt_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"s4d: {key} must be a finite number, got {value!r}")
        if not 0 < dt_min <= dt_max:
            raise ConfigError(f"s4d: step sizes must satisfy 0 < dt_min <= dt_max, got dt_min={dt_min!r}, "
                              f"dt_max={dt_max!r}")

    @classmethod
    def valid_hidden(cls, n: int, *, d_state: int = 64) -> None:
        super().valid_hidden(n)
        cls.check_options(d_state=d_state)

    def param_groups(self):
        recurrence = [self.log_A_real, self.A_imag, self.log_dt]
        return {"A": recurrence,
                "other": [p for p in self.parameters() if all(p is not q for q in recurrence)]}

    def _dtA(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, Δ A), each (H, N/2) complex."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        return A, A * torch.exp(self.log_dt).unsqueeze(-1)

    def discretized(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ā, B̄), each (H, N/2) complex: the zero-order hold of ds/dt = A s + u with step Δ."""
        A, dtA = self._dtA()
        A_bar = torch.exp(dtA)
        return A_bar, (A_bar - 1) / A

    def kernel(self, length: int) -> torch.Tensor:
        """K (H, length), K_l = 2 Re(Σ_k C_k B̄_k Ā_k^l), as ``S4DKernel.forward``: Vandermonde exp(Δ A l)."""
        A, dtA = self._dtA()
        C = torch.view_as_complex(self.C) * (torch.exp(dtA) - 1) / A                       # C B̄ (H, N/2)
        steps = torch.arange(length, device=dtA.device, dtype=self.log_dt.dtype)
        return 2 * torch.einsum("hk,hkl->hl", C, torch.exp(dtA.unsqueeze(-1) * steps)).real

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        u = self.encoder(x)                                               # (B, L, H)
        length = u.shape[1]
        if self.fast_now:
            # causal convolution y_t = Σ_{l<=t} K_l u_{t-l}: zero-padded to 2L, no wrap-around
            k_f = torch.fft.rfft(self.kernel(length), n=2 * length, dim=-1).transpose(0, 1)   # (L+1, H)
            u_f = torch.fft.rfft(u, n=2 * length, dim=1)                                      # (B, L+1, H)
            y = torch.fft.irfft(u_f * k_f, n=2 * length, dim=1)[:, :length]
        else:
            A_bar, B_bar = self.discretized()
            s = sequential_scan(A_bar, B_bar * u.unsqueeze(-1), record=self.step_record())   # (B, L, H, N/2)
            y = 2 * torch.einsum("blhk,hk->blh", s, torch.view_as_complex(self.C)).real
        y = y + self.D * u
        # the official layer's nn.GELU() (exact erf form), then Conv1d(H, 2H, 1) + GLU(dim=channels)
        z = F.glu(self.glu(F.gelu(y)), dim=-1)
        return self.readout(z)
