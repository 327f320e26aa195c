"""EURNN's factored path fused into one ``torch.autograd.Function`` with a hand-written backward.

``y_t = h_t W^T + c``, ``h_t = modReLU(x_t U + e^{iω} A_{L-1} ... A_0 h_{t-1})``, each layer A_l
mixing disjoint coordinate pairs by 2x2 matrices (eurnn's x <- v1 * x + v2 * x[P]). The plain
loop ``unitary.unroll`` records ~15 autograd nodes per step; here, as models/fastpath.py does for
a dense W, the forward runs without a graph: two in-place ops per layer and step, six for
modReLU, and the input projection and readout as one GEMM per block of steps. Nothing reads a
value on the host, so the same code runs on a GPU.

Layout (``PairLayout``): the state is a row of ``width`` positions (the n coordinates in a fixed
order plus zero pads), one row per step and batch entry, complex for the complex version. A
layer views a row as (G, 2, S): pair member j of group g at offset s is position
``base + g*gs + j*ps + s``, and ``y[:, j] = M0[:, j] x[:, 0] + M1[:, j] x[:, 1]`` is two broadcast
ops whatever the pair distance. The tunable style stores ``pad, odd coordinates, pad, even
coordinates, pad``: each of its layers is then two contiguous planes (the B layer's lone end
coordinates pair with the outer pads). The FFT style keeps the natural order (pairs i, i + S) and,
as some of its layers have small S, runs position-major ((T, width, B) in memory instead of
(T, B, width)) so that inner loops stay long. ``to_positions`` gathers U, the readout weights and
h0 into the buffer's order and ``pair_coefficients`` builds (M0, M1) from (v1, v2, final), both
with autograd, so the parameters' own maps (``EURNN.coefficients``) stay autograd.

Backward: one pass over time, a block of steps at a time: per step the modReLU Jacobian
``g_z = α g + β conj(g)`` and two ops per layer with the adjoint coefficients; per block α and β
(from the saved m and s of modReLU), the states (z s) and the layers' inputs, then the
parameter gradients as bulk reductions (``dM = Σ_{t,b} g_y conj(x)``, dbias) and GEMMs (dU,
dW). Saved: z, m and s (the states in place of z for the real version), about 2 (1) copies of
the states where the plain loop saves 10 to 24. Double backward is not supported.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from bench.errors import ConfigError
from .unitary import modrelu_real_

# Elements per block of backward scratch (steps x batch x width).
CHUNK = 1 << 16
# The FFT style runs position-major when a layer has pairs closer than this (short inner loops).
MIN_SPAN = 16


class PairLayout(NamedTuple):
    n: int                      # coordinates (complex or real units)
    width: int                  # positions per row: coordinates and pads
    views: tuple                # per layer (base, G, gs, ps, S): member j of group g at base + g*gs + j*ps + s
    position_major: bool        # buffers (T, width, B) in memory instead of (T, B, width)
    pads: tuple                 # positions holding no coordinate


def _pairs(t: torch.Tensor, view: tuple, dim: int) -> torch.Tensor:
    """The (..., G, 2, S, ...) view of ``t``'s position dimension ``dim`` for one layer."""
    base, G, gs, ps, S = view
    sp = t.stride(dim)
    return t.as_strided(t.shape[:dim] + (G, 2, S) + t.shape[dim + 1:],
                        t.stride()[:dim] + (gs * sp, ps * sp, sp) + t.stride()[dim + 1:],
                        t.storage_offset() + base * sp)


def pair_layout(partner: torch.Tensor, style: str) -> tuple[PairLayout, dict[str, torch.Tensor]]:
    """The layout of ``style`` ("tunable" or "fft"), checked against ``partner`` (L, n): each
    coordinate's partner per layer (itself when it passes through).

    Returns (layout, tables): ``coord`` (width,) the coordinate at each position (n at a pad),
    ``first`` (L, width) member 0 of its pair, ``alone`` (L, width) a coordinate paired with a pad.
    """
    L, n = partner.shape
    if style == "tunable":
        m = n // 2
        order = [n] + list(range(1, n, 2)) + [n] + list(range(0, n, 2)) + [n]
        views = tuple((1, 1, 0, m + 1, m) if l % 2 == 0 else (0, 1, 0, m + 2, m + 1) for l in range(L))
    else:
        order = list(range(n))
        views = tuple((0, n // (2 * s), 2 * s, s, s) for s in (n >> (l + 1) for l in range(L)))
    width = len(order)
    layout = PairLayout(n, width, views, min(v[4] for v in views) < MIN_SPAN,
                        tuple(p for p, c in enumerate(order) if c == n))
    coord = torch.tensor(order)
    first = torch.zeros(L, width, dtype=torch.bool)
    alone = torch.zeros(L, width, dtype=torch.bool)
    ext = torch.cat([partner, torch.full((L, 1), n, dtype=partner.dtype)], 1)   # a pad's partner: a pad
    for l, view in enumerate(views):
        idx = _pairs(torch.arange(width), view, 0)
        p0, p1 = idx[:, 0].reshape(-1), idx[:, 1].reshape(-1)
        c0, c1 = coord[p0], coord[p1]
        covered = torch.cat([c0, c1])
        lone = (c0 == n) | (c1 == n)
        first[l, p0] = True
        alone[l, p0], alone[l, p1] = lone & (c0 < n), lone & (c1 < n)
        if (sorted(covered[covered < n].tolist()) != list(range(n))
                or not torch.equal(ext[l, c0], torch.where(lone, c0, c1))
                or not torch.equal(ext[l, c1], torch.where(lone, c1, c0))):
            raise ConfigError(f"pair layout of style {style!r} does not match layer {l}'s partners (n={n})")
    return layout, {"coord": coord, "first": first, "alone": alone}


def to_positions(X: torch.Tensor, coord: torch.Tensor, n: int, complex_: bool) -> torch.Tensor:
    """X's last axis (features [Re | Im] of n each, Re only (n) or real n) in the buffer's order:
    (..., 2*width) with (Re, Im) interleaved per position for ``complex_``, else (..., width);
    zeros at pads and at the Im slots of Re-only features. An autograd gather."""
    zero = X.shape[-1]                                           # the index of an appended zero column
    X = torch.cat([X, X.new_zeros(*X.shape[:-1], 1)], -1)
    re = torch.where(coord < n, coord, zero)
    if not complex_:
        return X[..., re]
    im = torch.where(coord < n, coord + n, zero) if zero == 2 * n else torch.full_like(coord, zero)
    return X[..., torch.stack([re, im], -1).reshape(-1)]


def pair_coefficients(v1: torch.Tensor, v2: torch.Tensor, final: torch.Tensor | None,
                      coord: torch.Tensor, first: torch.Tensor, alone: torch.Tensor):
    """(M0, M1), each (L, width): per output position the coefficients of pair members 0 and 1,
    from eurnn's (v1, v2) (L, n) and final diagonal (n,) or None (autograd ops, once per forward).
    A lone coordinate gets x_i <- (v1 + v2) x_i (its partner is itself); pads get zeros."""
    pad = v1.new_zeros(v1.shape[0], 1)
    a, b = torch.cat([v1, pad], 1)[:, coord], torch.cat([v2, pad], 1)[:, coord]
    own, other = a + torch.where(alone, b, 0), torch.where(alone, 0, b)
    M0, M1 = torch.where(first, own, other), torch.where(first, other, own)
    if final is not None:
        f = torch.cat([final, final.new_zeros(1)])[coord]
        M0, M1 = torch.cat([M0[:-1], M0[-1:] * f]), torch.cat([M1[:-1], M1[-1:] * f])
    return M0, M1


def pair_rnn(x: torch.Tensor, U: torch.Tensor, h0: torch.Tensor, M0: torch.Tensor, M1: torch.Tensor,
             bias: torch.Tensor, W: torch.Tensor, c: torch.Tensor, layout: PairLayout, *,
             eps: float, eps_sqrt: float) -> torch.Tensor:
    """Outputs (B, T, p) of ``y_t = h_t W^T + c``, ``h_t = modReLU(x_t U + layers(h_{t-1}))``;
    same numbers as the plain loop (to rounding).

    Args:
        x: (B, T, m) inputs.
        U: (m, D) input weights in the buffer's order (``to_positions``): D = 2 width for the
            complex version, else width.
        h0: (1, width) or (B, width) initial state, complex for the complex version, zero at pads.
        M0, M1: (L, width) layer coefficients (``pair_coefficients``).
        bias: (width,) real modReLU bias: complex ``z ReLU(m + b) / (m + eps)`` with
            ``m = sqrt(|z|^2 + eps_sqrt)``; real ``sign(z) ReLU(|z| + b)`` (eps unused).
        W: (p, D) readout weights in the buffer's order; c: (p,) readout bias.
    """
    B, T, m = x.shape
    N, cplx = layout.width, h0.is_complex()
    D = 2 * N if cplx else N
    if U.shape != (m, D) or W.dim() != 2 or W.shape[1] != D or c.shape != W.shape[:1] or h0.dim() != 2 \
            or h0.shape[1] != N or h0.shape[0] not in (1, B) or M0.shape != (len(layout.views), N) \
            or M1.shape != M0.shape or bias.shape != (N,):
        raise ConfigError(f"pair_rnn: x {tuple(x.shape)}, U {tuple(U.shape)}, h0 {tuple(h0.shape)}, "
                          f"M {tuple(M0.shape)}, bias {tuple(bias.shape)}, W {tuple(W.shape)} do not fit width {N}")
    cfg = (cplx, float(eps), float(eps_sqrt))
    tensors = (x, U, h0, M0, M1, bias, W, c)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _PairRNN.apply(*tensors, layout, cfg)
    with torch.no_grad():
        return _forward(*tensors, layout, cfg)[0]


def _new(like: torch.Tensor, lead: tuple, N: int, B: int, layout: PairLayout, zero: str = "all") -> torch.Tensor:
    """A (*lead, N, B)-shaped buffer in the layout's memory order: zero ("all"), zero at the pads
    only ("pads": the rest is written before it is read) or uninitialised ("none")."""
    t = like.new_empty(*lead, N, B) if layout.position_major else like.new_empty(*lead, B, N).transpose(-1, -2)
    if zero == "all":
        return t.zero_()
    for p in layout.pads if zero == "pads" else ():
        t[..., p, :].zero_()
    return t


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(k, N, B)-shaped states -> (k B, D) real rows: a view in batch-major memory, else a copy."""
    t = t.transpose(1, 2)
    t = torch.view_as_real(t) if t.is_complex() else t
    return t.reshape(t.shape[0] * t.shape[1], -1)


def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, layout: PairLayout) -> None:
    """``out`` ((k, N, B)-shaped states) = rows a @ b."""
    if not layout.position_major:
        torch.mm(a, b, out=_rows(out))
        return
    k, N, B = out.shape
    r = (a @ b).view(k, B, N, -1)
    out.copy_((torch.view_as_complex(r) if out.is_complex() else r[..., 0]).transpose(1, 2))


def _coef(M: torch.Tensor, B: int, layout: PairLayout) -> torch.Tensor:
    """(L, width) -> (L, width, B): broadcast over the batch, or materialised when position-major
    (every operand of a step then contiguous along the batch)."""
    M = M.unsqueeze(-1)
    return M.expand(*M.shape[:-1], B).contiguous() if layout.position_major else M


def _steps(N: int, B: int) -> int:
    return max(1, CHUNK // (N * B))


def modrelu_jacobian(Z, mag, S, b, eps, e_sqrt):
    """The complex modReLU's backward ``g_z = alpha g + beta conj(g)`` for pre-activations Z from
    the forward's m and s (``modrelu_scale_into``; b the bias broadcast to them): returns (alpha
    (complex), beta, r = ds/db = 1 / (m + eps) where s > 0, else 0)."""
    den = mag + eps
    r = torch.sign(S).div_(den)
    cc = torch.mul(r, r).div_(mag).mul_(eps - b).mul_(0.5)        # (ds/dm) / (2m)
    # g_z = s g + 2cc z Re(conj(z) g): alpha = s + cc|z|^2 (|z|^2 = m^2 - eps_sqrt), beta = cc z^2
    alpha = torch.addcmul(-e_sqrt, mag, mag).mul_(cc).add_(S).to(Z.dtype)
    return alpha, torch.mul(Z, Z).mul_(cc), r


def modrelu_scale_into(re, im, bme, e_sqrt, e, one, mag, s, den) -> None:
    """``unitary.modrelu_scale`` ("inside" form) written into ``s`` in two fused ops: ``m = sqrt(|z|^2 +
    eps_sqrt)`` into ``mag``, and ``ReLU(m + b) / (m + eps) = ReLU(1 + (b - eps) / (m + eps))`` with
    ``bme = b - eps`` (the same value up to rounding; the tests compare with the plain loop to 1e-10)."""
    torch.addcmul(e_sqrt, re, re, out=mag).addcmul_(im, im).sqrt_()
    torch.addcdiv(one, bme, torch.add(mag, e, out=den), out=s).relu_()


def _forward(x, U, h0, M0, M1, bias, W, c, layout: PairLayout, cfg, keep: bool = False):
    """Returns (y (B, T, p), kept): kept = (Z,) the states (T, N, B) in place of the
    pre-activations (real version), or (Z, MAG, S) the pre-activations and the modReLU's m and s of
    every step (complex version; Z only unless ``keep``)."""
    cplx, eps, eps_sqrt = cfg
    B, T, _ = x.shape
    N, views, L = layout.width, layout.views, len(layout.views)
    xt = x.transpose(0, 1).reshape(T * B, -1)                    # (T B, m)
    like = U.new_empty(0, dtype=torch.promote_types(U.dtype, torch.complex64) if cplx else U.dtype)
    Z = _new(like, (T,), N, B, layout, "none")                   # xu, then z: filled a block at a time
    y = x.new_empty(T, B, W.shape[0])
    k = min(_steps(N, B), T)
    # the states: a block of steps at a time (two blocks, the previous one feeds the first step), or z's place
    Hb = [_new(Z, (k,), N, B, layout, "none") for _ in range(2)] if cplx else None
    H = [Hb[(t // k) % 2][t % k] for t in range(T)] if cplx else list(Z.unbind(0))
    W0, W1 = _coef(M0, B, layout), _coef(M1, B, layout)
    m0 = [_pairs(W0[l], v, 0) for l, v in enumerate(views)]
    m1 = [_pairs(W1[l], v, 0) for l, v in enumerate(views)]
    scratch = [_new(Z, (), N, B, layout) for _ in range(2)]      # inner layers' outputs; pads stay zero
    # every per-step view made once (Python indexing costs microseconds per view)
    first_in = [_pairs(h, views[0], 0) for h in [h0.expand(B, N).t()] + H[:-1]]
    first_in = [(p[:, 0:1], p[:, 1:2]) for p in first_in]
    mid_in = [None] + [(p[:, 0:1], p[:, 1:2]) for p in (_pairs(scratch[(l - 1) % 2], views[l], 0) for l in range(1, L))]
    mid_out = [_pairs(scratch[l % 2], views[l], 0) for l in range(L)]
    last_out = _pairs(Z, views[-1], 1).unbind(0)
    Zs = Z.unbind(0)
    b = _coef(bias, B, layout)
    if cplx:
        e_sqrt, e, one = (Z.real.new_tensor(v) for v in (eps_sqrt, eps, 1.0))
        Re, Im = Z.real.unbind(0), Z.imag.unbind(0)
        mag, s, den = (_new(Z.real, (), N, B, layout) for _ in range(3))
        MAG, S = (_new(Z.real, (T,), N, B, layout, "none") for _ in range(2)) if keep else (None, None)
        mags, ss = (MAG.unbind(0), S.unbind(0)) if keep else ([mag] * T, [s] * T)
        bme = b - eps
    else:
        a = _new(Z, (), N, B, layout)
    for t in range(T):
        if t % k == 0:
            _mm_into(Z[t:t + k], xt[t * B:(t + k) * B], U, layout)
        for l in range(L):
            x0, x1 = first_in[t] if l == 0 else mid_in[l]
            if l == L - 1:
                last_out[t].addcmul_(x0, m0[l]).addcmul_(x1, m1[l])
            else:
                torch.mul(x0, m0[l], out=mid_out[l]).addcmul_(x1, m1[l])
        if cplx:
            modrelu_scale_into(Re[t], Im[t], bme, e_sqrt, e, one, mags[t], ss[t], den)
            torch.mul(Zs[t], ss[t], out=H[t])
        else:
            modrelu_real_(Zs[t], b, a, H[t])
        if t % k == k - 1 or t == T - 1:                          # the readout of a block of steps
            t0 = t - t % k
            states = Hb[(t // k) % 2][:t + 1 - t0] if cplx else Z[t0:t + 1]
            torch.addmm(c, _rows(states), W.T, out=y[t0:t + 1].view(-1, W.shape[0]))
    return y.transpose(0, 1), ((Z, MAG, S) if cplx and keep else (Z,))


class _PairRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, U, h0, M0, M1, bias, W, c, layout, cfg):
        y, Z = _forward(x.detach(), U.detach(), h0.detach(), M0.detach(), M1.detach(), bias.detach(),
                        W.detach(), c.detach(), layout, cfg, keep=True)
        ctx.layout, ctx.cfg = layout, cfg
        ctx.save_for_backward(x, U, h0, M0, M1, bias, W, *Z)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        return _backward(ctx, grad_y)


def _backward(ctx, grad_y):
    x, U, h0, M0, M1, bias, W, Z, *kept = ctx.saved_tensors      # kept: MAG, S (complex version)
    layout, (cplx, eps, eps_sqrt) = ctx.layout, ctx.cfg
    views, L = layout.views, len(layout.views)
    T, N, B = Z.shape
    need = ctx.needs_input_grad
    need_M = need[3] or need[4]
    gy = grad_y.transpose(0, 1).contiguous()                     # (T, B, p)
    xt = x.transpose(0, 1)                                       # (T, B, m)
    # adjoint coefficients: g_x[:, i] = conj(M_i[:, 0]) g_y[:, 0] + conj(M_i[:, 1]) g_y[:, 1]
    A0, A1 = (torch.conj_physical(M) if M.is_complex() else M.clone() for M in (M0, M1))   # fresh copies
    for l, v in enumerate(views):
        _pairs(A0[l], v, 0)[:, 1] = _pairs(M1[l], v, 0)[:, 0].conj()
        _pairs(A1[l], v, 0)[:, 0] = _pairs(M0[l], v, 0)[:, 1].conj()
    W0, W1 = _coef(A0, B, layout), _coef(A1, B, layout)
    a0 = [_pairs(W0[l], v, 0) for l, v in enumerate(views)]
    a1 = [_pairs(W1[l], v, 0) for l, v in enumerate(views)]
    dx = xt.new_empty(xt.shape) if need[0] else None               # (T, B, m)
    dU = torch.zeros_like(U) if need[1] else None
    dh0 = _new(Z, (), N, B, layout) if need[2] else None
    dM0, dM1 = (torch.zeros_like(M0), torch.zeros_like(M1)) if need_M else (None, None)
    dbias = torch.zeros_like(bias) if need[5] else None
    dW = torch.zeros_like(W) if need[6] else None
    dc = gy.sum((0, 1)) if need[7] else None
    k = min(_steps(N, B), T)
    # a block of steps: dL/dh (G; the recurrent part added in place), dL/dz (GZ; the real version:
    # G in place), dL/d(output of layer l < L-1) (gmid), recomputed layer inputs (xbuf), pads zero
    G = _new(Z, (k,), N, B, layout, "none")
    GZ = _new(Z, (k,), N, B, layout, "none") if cplx else G
    gmid = [_new(Z, (k,), N, B, layout, "pads") for _ in range(L - 1)]
    xbuf = [_new(Z, (k,), N, B, layout, "pads" if j else "none") for j in range(3 if L > 1 else 1)]
    Mc0, Mc1 = (M.conj().resolve_conj().unsqueeze(-1) for M in (M0, M1))
    carry = _new(Z, (), N, B, layout)                           # dL/dh_{t0-1} from step t0, for the next block
    # per-step views, made once
    into_prev = [_pairs(carry, views[0], 0)] + list(_pairs(G, views[0], 1).unbind(0)[:-1])
    y_in = [_pairs(g, views[l], 1) for l, g in enumerate(gmid + [GZ])]
    y_in = [list(zip(y[:, :, 0:1].unbind(0), y[:, :, 1:2].unbind(0))) for y in y_in]
    x_out = [None] + [_pairs(gmid[l - 1], views[l], 1).unbind(0) for l in range(1, L)]
    dh0v = _pairs(dh0, views[0], 0) if need[2] else None
    Gs, GZs = G.unbind(0), GZ.unbind(0)
    b = bias.unsqueeze(-1)
    if cplx:
        e_sqrt = Z.real.new_tensor(eps_sqrt)
        Gc = _new(Z, (k,), N, B, layout, "none")                # conj(G), per step of a block
        Gcs = Gc.unbind(0)
    for t0 in range(k * ((T - 1) // k), -1, -k):
        t1 = min(t0 + k, T)
        nb, s0 = t1 - t0, max(t0 - 1, 0)                         # s0: one step more, the state before t0
        _mm_into(G[:nb], gy[t0:t1].view(-1, gy.shape[-1]), W, layout)    # dL/dh from the readout
        if t1 < T:
            G[nb - 1].add_(carry)
        if cplx:                                                  # recompute m, s and the states h = z s
            Zb = Z[s0:t1]
            Hb = Zb * kept[1][s0:t1]                                  # the states s0 .. t1-1
            alpha, beta, r = modrelu_jacobian(Zb[t0 - s0:], kept[0][t0:t1], kept[1][t0:t1], b, eps, e_sqrt)
            als, bes = alpha.unbind(0), beta.unbind(0)
        else:
            Hb = Z[s0:t1]
            fs = (Hb[t0 - s0:] != 0).to(Z.dtype).unbind(0)           # modReLU's derivative
        for i in range(nb - 1, -1, -1):
            if cplx:
                torch.mul(Gs[i], als[i], out=GZs[i]).addcmul_(torch.conj_physical(Gs[i], out=Gcs[i]), bes[i])
            else:
                Gs[i].mul_(fs[i])
            for l in range(L - 1, -1, -1):                        # the layers' adjoints, last to first
                y0, y1 = y_in[l][i]
                if l > 0:
                    torch.mul(y0, a0[l], out=x_out[l][i]).addcmul_(y1, a1[l])
                elif i > 0:
                    into_prev[i].addcmul_(y0, a0[0]).addcmul_(y1, a1[0])
                elif t0 > 0:
                    torch.mul(y0, a0[0], out=into_prev[0]).addcmul_(y1, a1[0])
                elif need[2]:
                    torch.mul(y0, a0[0], out=dh0v).addcmul_(y1, a1[0])
        Hn = Hb[t0 - s0:]                                         # the states of steps t0 .. t1-1
        if need[5]:                                               # sum of Re(conj(z) g) ds/db
            if cplx:
                dbias.add_((Gc[:nb] * (Zb[t0 - s0:] * r)).sum((0, 2)).real)
            else:
                dbias.add_(torch.sign(Hn).mul_(G[:nb]).sum((0, 2)))
        if need[6]:
            dW.addmm_(gy[t0:t1].view(-1, gy.shape[-1]).T, _rows(Hn))
        if need[0] or need[1]:
            gz = _rows(GZ[:nb])
            if need[1]:
                dU.addmm_(xt[t0:t1].reshape(-1, xt.shape[-1]).T, gz)
            if need[0]:
                torch.mm(gz, U.T, out=dx[t0:t1].view(-1, xt.shape[-1]))
        if need_M:                                                # dM = sum over steps and batch of g_y conj(x)
            if cplx:
                Hb.conj_physical_()                               # a temporary; dW has used it
            xs = Hb[:nb] if t0 > 0 else xbuf[0][:nb]              # conj(the first layer's inputs)
            if t0 == 0:
                xs[0], xs[1:] = h0.t().conj(), Hb[:nb - 1]
            for l, v in enumerate(views):
                gv, xv = _pairs(GZ[:nb] if l == L - 1 else gmid[l][:nb], v, 1), _pairs(xs, v, 1)
                _pairs(dM0[l], v, 0).add_((gv * xv[:, :, 0:1]).sum((0, 4)))
                _pairs(dM1[l], v, 0).add_((gv * xv[:, :, 1:2]).sum((0, 4)))
                if l < L - 1:                                     # conj(the next layer's inputs)
                    nxt = xbuf[1 + l % 2][:nb]
                    xn = _pairs(nxt, v, 1)
                    torch.mul(xv[:, :, 0:1], _pairs(Mc0[l], v, 0), out=xn)
                    xn.addcmul_(xv[:, :, 1:2], _pairs(Mc1[l], v, 0))
                    xs = nxt
    if need[2]:
        dh0 = (dh0 if h0.shape[0] == B else dh0.sum(1, keepdim=True)).t()
    return (None if dx is None else dx.transpose(0, 1)), dU, dh0, dM0, dM1, dbias, dW, dc, None, None
