"""EURNN: efficient unitary RNN from layers of 2x2 rotations (Jing et al., ICML 2017; jingli9111/EUNN-tensorflow).

Each layer rotates disjoint coordinate pairs by R(θ)·diag(1, e^{iφ}). Tunable style: L layers
alternating A (pairs (0,1), (2,3), ...) and B (pairs (1,2), (3,4), ...; ends pass through);
FFT style: log2(n) layers pairing i with i + n/2^{k+1}. The complex version ends with
diag(e^{iω}); the real version has φ = 0 and no final diagonal.

Vectorised (as eunn.py's loop): per layer two coefficient vectors v1, v2 and a fixed partner
permutation P give x <- v1 * x + v2 * x[P], with no loop over rotations. The coefficients are
built once per forward pass; then either W is multiplied out by applying the layers to the
identity (one GEMM per step) or the layers are applied to the state at every step (O(Ln)),
whichever is faster (option ``dense``). With ``fast`` each runs through a fused recurrence with a
hand-written backward: models/fastpath.py (dense), models/fastpath_factored.py (factored: input
projection, layers, modReLU and readout in one autograd Function); the plain loop
``unitary.unroll`` is the reference and the recorder's path.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from bench.errors import ConfigError, InvalidHiddenSizeError, UnknownNameError

from .base import RecurrentModel, glorot_
from .fastpath import recurrence
from .fastpath_factored import pair_coefficients, pair_layout, pair_rnn, to_positions
from .unitary import complex_to_real_block, modrelu_complex, modrelu_cplx, modrelu_real, unitarity_error, unroll
from .urnn import dense_is_faster

STYLES = ("tunable", "fft")
READOUTS = ("re", "reim")
EPS = 0.01          # the current reference's modReLU ε (raised from 1e-5 after NaNs on MNIST)


def layer_pairs(n: int, style: str, capacity: int) -> list[list[tuple[int, int]]]:
    """The (a, b) coordinate pairs rotated by each layer."""
    if style == "tunable":
        a_layer = [(i, i + 1) for i in range(0, n - 1, 2)]
        b_layer = [(i, i + 1) for i in range(1, n - 2, 2)]
        return [a_layer if l % 2 == 0 else b_layer for l in range(capacity)]
    layers = []
    stride = n // 2
    while stride >= 1:
        layers.append([(i, i + stride) for i in range(n) if (i // stride) % 2 == 0])
        stride //= 2
    return layers


def _layer_tables(n: int, style: str, capacity: int):
    """(L, n) partner index, rotation index (n_rot for 'no rotation') and second-of-pair mask."""
    layers = layer_pairs(n, style, capacity)
    n_rot = sum(len(pairs) for pairs in layers)
    partner = torch.arange(n).repeat(len(layers), 1)
    rot = torch.full((len(layers), n), n_rot, dtype=torch.long)
    is_b = torch.zeros(len(layers), n, dtype=torch.bool)
    k = 0
    for l, pairs in enumerate(layers):
        for a, b in pairs:
            partner[l, a], partner[l, b] = b, a
            rot[l, a] = rot[l, b] = k
            is_b[l, b] = True
            k += 1
    return partner, rot, is_b, n_rot


# EURNN's modReLU, (z / norm) * ReLU(norm + b) with norm = |z| + ε (ε outside the root, the
# "outside" placement of unitary.modrelu_scale, with its 1e-12 in the root for a finite gradient
# at z = 0): on [Re | Im], on a complex tensor, and the real version sign(z) ReLU(|z| + ε + b).
modrelu_eurnn = partial(modrelu_complex, eps=EPS, placement="outside")
modrelu_eurnn_cplx = partial(modrelu_cplx, eps=EPS, placement="outside")
modrelu_eurnn_real = partial(modrelu_real, eps=EPS)


class EURNN(RecurrentModel):
    """EURNN, tunable or FFT style, complex or real.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n (complex dimension in the complex version).
        style: ``"tunable"`` (L layers; n even, L even, 2 <= L <= n) or ``"fft"``
            (log2 n layers; n a power of two). Default: ``"tunable"``.
        capacity: number of layers L of the tunable style (ignored by FFT). Default: ``2``.
        complex: complex state with phases φ and a final diag(e^{iω}); ``False`` is the real
            (orthogonal) version. Default: ``True``.
        readout: ``"re"`` reads out Re(h) only, as the reference demos; ``"reim"`` reads
            [Re h | Im h] (fits the paper's ≈22k copying budget, §5.2: 21,511). Default: ``"re"``.
        dense: ``True`` builds W once per forward and runs one GEMM per step; ``False`` applies
            the layers to the state at every step (O(Ln)); ``None`` picks the faster for the
            device, n and number of layers (``urnn.dense_is_faster``). Default: ``None``.
        fast: run the dense recurrence with ``fastpath.recurrence`` and the factored one with
            ``fastpath_factored.pair_rnn`` (hand-written backwards); ``False`` uses the plain
            autograd loop ``unitary.unroll``. Default: ``True``.

    Example::

        >>> model = EURNN(d_input=10, d_output=9, n_hidden=512, capacity=2, readout="reim")
        >>> model(torch.rand(2, 120, 10)).shape
        torch.Size([2, 120, 9])
    """

    name = "eurnn"
    description = "efficient unitary RNN: layers of 2x2 rotations, tunable (capacity L) or FFT style"
    paper = "Jing et al., ICML 2017"
    groups = ("W", "D", "other")
    default_opts = {"W": ("rmsprop", 1e-3), "D": ("rmsprop", 1e-3), "other": ("rmsprop", 1e-3)}
    optimizer_semantics = {"*": "tf"}   # TF1 RMSProp of the EUNN-tensorflow code (copying_task.py, mnist_task.py)

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, style: str = "tunable",
                 capacity: int = 2, complex: bool = True, readout: str = "re", dense: bool | None = None,
                 fast: bool = True):
        self.valid_hidden(n_hidden, style=style, capacity=capacity, complex=complex, readout=readout, dense=dense)
        super().__init__(d_input, d_output, n_hidden)
        n = n_hidden
        self.style, self.capacity, self.is_complex, self.readout_mode = style, capacity, complex, readout
        partner, rot, is_b, n_rot = _layer_tables(n, style, capacity)
        self.dense = dense                                        # None: chosen per forward (dense_is_faster)
        self.fast = fast                                          # models/fastpath.py, fastpath_factored.py
        self.register_buffer("partner", partner, persistent=False)
        self.register_buffer("rot", rot, persistent=False)
        self.register_buffer("is_b", is_b, persistent=False)
        self.layout, tables = pair_layout(partner, style)            # the fused factored path's
        for key, table in tables.items():
            self.register_buffer(f"pair_{key}", table, persistent=False)
        width = 2 * n if complex else n
        self.theta = nn.Parameter(torch.empty(n_rot).uniform_(-math.pi, math.pi))
        if complex:
            self.phi = nn.Parameter(torch.empty(n_rot).uniform_(-math.pi, math.pi))
            self.omega = nn.Parameter(torch.empty(n).uniform_(-math.pi, math.pi))
        self.U = nn.Parameter(torch.empty(d_input, width).uniform_(-0.01, 0.01))    # [Re U | Im U]
        self.bias = nn.Parameter(torch.zeros(n))                                      # modReLU bias
        self.register_buffer("h0", torch.zeros(1, width))
        self.readout = nn.Linear(2 * n if complex and readout == "reim" else n, d_output)
        glorot_(self.readout.weight.data.T)
        nn.init.constant_(self.readout.bias, 0.01)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, style: str = "tunable", capacity: int = 2,
                 complex: bool = True, readout: str = "re", dense: bool | None = None) -> int:
        n_rot = capacity * (n - 1) // 2 if style == "tunable" else (n // 2) * int(math.log2(n))
        if not complex:
            return n_rot + n + n * d_input + n * d_output + d_output
        features = 2 * n if readout == "reim" else n
        # θ and φ per rotation, ω n, bias n, input 2nm, readout
        return 2 * n_rot + 2 * n + 2 * n * d_input + features * d_output + d_output

    @classmethod
    def check_options(cls, *, style: str = "tunable", capacity: int = 2, complex: bool = True,
                      readout: str = "re", dense: bool | None = None) -> None:
        """The errors that do not depend on n (raised as they are by ``hidden_for_budget``)."""
        if style not in STYLES:
            raise UnknownNameError(f"eurnn: unknown style {style!r}; known styles: {', '.join(STYLES)}")
        if readout not in READOUTS:
            raise UnknownNameError(f"eurnn: unknown readout {readout!r}; known readouts: {', '.join(READOUTS)}")
        if not isinstance(complex, bool):
            raise ConfigError(f"eurnn: option complex must be true or false, got {complex!r}")
        if dense is not None and not isinstance(dense, bool):
            raise ConfigError(f"eurnn: option dense must be true, false or null (automatic), got {dense!r}")
        if not complex and readout == "reim":
            raise ConfigError("eurnn: readout 'reim' needs the complex version; use readout=re with complex=false")
        if style == "tunable":
            if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 2:
                raise InvalidHiddenSizeError(f"eurnn: capacity L must be an even integer >= 2, got {capacity!r}")
            if capacity % 2:
                raise InvalidHiddenSizeError(
                    f"eurnn: capacity L must be even (layers come in A/B pairs), got L={capacity}")

    @classmethod
    def valid_hidden(cls, n: int, *, style: str = "tunable", capacity: int = 2, complex: bool = True,
                     readout: str = "re", dense: bool | None = None) -> None:
        cls.check_options(style=style, capacity=capacity, complex=complex, readout=readout, dense=dense)
        if style == "fft":
            if n < 2 or n & (n - 1):
                low = 1 << max(1, n.bit_length() - 1)
                raise InvalidHiddenSizeError(
                    f"eurnn: FFT style needs a power-of-two hidden size, got n={n}; nearest: {low} or {2 * low}")
            return
        if n % 2:
            raise InvalidHiddenSizeError(
                f"eurnn: tunable style needs an even hidden size (rotations act on pairs), got n={n}"
                + (f"; try {n - 1} or {n + 1}" if n > 1 else ""))
        if capacity > n:
            raise InvalidHiddenSizeError(
                f"eurnn: capacity L={capacity} exceeds the hidden size n={n}; allowed: even L with 2 <= L <= n")

    @classmethod
    def groups_for(cls, *, complex: bool = True, **_) -> tuple[str, ...]:
        return cls.groups if complex else ("W", "other")      # the real version has no diagonal D

    def param_groups(self):
        if not self.is_complex:
            return {"W": [self.theta], "other": [self.U, self.bias, *self.readout.parameters()]}
        return {"W": [self.theta, self.phi], "D": [self.omega], "other": [self.U, self.bias, *self.readout.parameters()]}

    def coefficients(self):
        """Per-layer (v1, v2), each (layers, n), and the final diagonal e^{iω} (or None)."""
        zero = self.theta.new_zeros(1)
        theta = torch.cat([self.theta, zero])[self.rot]                 # (L, n); pad slot: θ = 0
        c, s = torch.cos(theta), torch.sin(theta)
        if not self.is_complex:
            return c, torch.where(self.is_b, s, -s), None
        e = torch.polar(torch.ones_like(theta), torch.cat([self.phi, zero])[self.rot])
        one = torch.ones_like(e)
        final = torch.polar(torch.ones_like(self.omega), self.omega)
        return c * torch.where(self.is_b, e, one), s * torch.where(self.is_b, one, -e), final

    def apply_layers(self, X: torch.Tensor, v1, v2, final) -> torch.Tensor:
        """W x for every row x of X (..., n): x <- v1 * x + v2 * x[P] per layer, then e^{iω}."""
        for l in range(v1.shape[0]):
            X = v1[l] * X + v2[l] * X[..., self.partner[l]]
        return X if final is None else X * final

    def recurrent_matrix(self) -> torch.Tensor:
        """(n, n) unitary (complex) or orthogonal (real) matrix, row convention (rows of I mapped)."""
        v1, v2, final = self.coefficients()
        return self.apply_layers(torch.eye(self.n_hidden, dtype=v1.dtype, device=v1.device), v1, v2, final)

    def use_dense(self, device: torch.device) -> bool:
        if self.dense is not None:
            return self.dense
        return dense_is_faster(self.n_hidden, self.partner.shape[0], device, fused=self.fast, real=not self.is_complex)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        dense = self.use_dense(x.device)
        if not dense and self.fast_now:
            return self.fused_factored(x)
        xu, n = x @ self.U, self.n_hidden
        # the recorder's |z| is the root's, sqrt(|z|^2 + 1e-12) (its ε sits outside, in the bias)
        record = self.step_record(self.bias, complex_=self.is_complex, eps=1e-12)
        if dense:
            W = self.recurrent_matrix()                                 # built once per forward
            if self.is_complex:
                W = complex_to_real_block(W)
            if self.fast_now:
                # the "outside" modReLU is the fast path's with 1e-12 in the root, ε in the
                # denominator and b + ε as its bias: ReLU(|z|_e + b) / |z|_e, |z|_e = sqrt(.) + ε
                kind = "modrelu_complex" if self.is_complex else "modrelu_real"
                hs = recurrence(xu, self.h0, W, self.bias + EPS, kind, eps=EPS, eps_sqrt=1e-12)
            elif self.is_complex:
                hs = unroll(xu, self.h0, W, lambda z: modrelu_eurnn(z, self.bias), record)
            else:
                hs = unroll(xu, self.h0, W, lambda z: modrelu_eurnn_real(z, self.bias), record)
        else:
            coef = self.coefficients()                                  # built once per forward
            step = lambda h: self.apply_layers(h, *coef)                # noqa: E731
            if self.is_complex:
                hc = unroll(torch.complex(xu[..., :n], xu[..., n:]), torch.complex(self.h0[:, :n], self.h0[:, n:]),
                            step, lambda z: modrelu_eurnn_cplx(z, self.bias), record)
                hs = torch.cat([hc.real, hc.imag], dim=-1)
            else:
                hs = unroll(xu, self.h0, step, lambda z: modrelu_eurnn_real(z, self.bias), record)
        return self.readout(hs[..., :n] if self.is_complex and self.readout_mode == "re" else hs)

    def fused_factored(self, x: torch.Tensor) -> torch.Tensor:
        """The factored path through models/fastpath_factored.py (input projection, recurrence and
        readout in one Function; the weights gathered into its buffer's order). Its modReLU is the
        dense fast path's: bias b + ε, ε, 1e-12 in the root."""
        n, c, coord = self.n_hidden, self.is_complex, self.pair_coord
        h0 = to_positions(self.h0, coord, n, c)
        if c:
            h0 = torch.view_as_complex(h0.view(h0.shape[0], -1, 2))
        M0, M1 = pair_coefficients(*self.coefficients(), coord, self.pair_first, self.pair_alone)
        bias = torch.cat([self.bias + EPS, self.bias.new_zeros(1)])[coord]
        return pair_rnn(x, to_positions(self.U, coord, n, c), h0, M0, M1, bias,
                        to_positions(self.readout.weight, coord, n, c), self.readout.bias, self.layout,
                        eps=EPS, eps_sqrt=1e-12)

    @torch.no_grad()
    def unitarity_error(self) -> float:
        return unitarity_error(self.recurrent_matrix())
