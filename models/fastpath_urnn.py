"""uRNN's factored path (restricted uRNN, models/urnn.py) fused into one ``torch.autograd.Function``.

``y_t = h_t W^T + c``, ``h_t = modReLU(x_t U + D3 R2 F^-1 D2 Π R1 F D1 h_{t-1})`` on the complex
state, row convention (``urnn.apply_restricted``). As models/fastpath_factored.py does for EURNN:
no autograd graph in the time loop (per step two FFTs, two rank-one updates for the reflections,
one gather for Π, three diagonal products, then modReLU, all into preallocated buffers), the
input projection and readout as one GEMM per block of steps, and a backward that runs the
adjoint chain per step (the unitary FFT's adjoint is the inverse FFT, a reflection is its own
adjoint, Π's is the inverse permutation) and the parameter gradients as bulk reductions and
GEMMs per block of steps. A reflection is ``x <- x - (x w) v`` with ``w = 2 conj(v) / |v|^2``
given (autograd carries dw to v). Saved: z, the FFT outputs f and p, and modReLU's m and s
(about 4 copies of the states, against the plain loop's 20). Nothing reads a value on the host.
Double backward is not supported.
"""
from __future__ import annotations

import torch

from bench.errors import ConfigError
from .fastpath_factored import CHUNK, modrelu_jacobian, modrelu_scale_into


def urnn_rnn(x: torch.Tensor, U: torch.Tensor, h0: torch.Tensor, d: torch.Tensor, v: torch.Tensor,
             w: torch.Tensor, perm: torch.Tensor, bias: torch.Tensor, W: torch.Tensor, c: torch.Tensor, *,
             eps: float) -> torch.Tensor:
    """Outputs (B, T, p) of the restricted uRNN; same numbers as the plain loop (to rounding).

    Args:
        x: (B, T, m) inputs.
        U: (m, 2n) input weights with (Re, Im) interleaved per unit (``interleave``).
        h0: (1, n) or (B, n) complex initial state.
        d: (3, n) complex diagonals D1, D2, D3; v, w: (2, n) complex, the reflections
            ``x <- x - (x w) v``; perm: (n,) the permutation Π (``x[..., perm]``).
        bias: (n,) modReLU bias, ``z ReLU(m + b) / (m + eps)`` with ``m = sqrt(|z|^2 + eps)``.
        W: (p, 2n) readout weights, (Re, Im) interleaved; c: (p,) readout bias.
    """
    B, T, m = x.shape
    n = d.shape[-1]
    if U.shape != (m, 2 * n) or h0.shape[-1] != n or h0.shape[0] not in (1, B) or d.shape != (3, n) \
            or v.shape != (2, n) or w.shape != (2, n) or perm.shape != (n,) or bias.shape != (n,) \
            or W.dim() != 2 or W.shape[1] != 2 * n or c.shape != W.shape[:1]:
        raise ConfigError(f"urnn_rnn: x {tuple(x.shape)}, U {tuple(U.shape)}, h0 {tuple(h0.shape)}, d {tuple(d.shape)}, "
                          f"v {tuple(v.shape)}, W {tuple(W.shape)} do not fit n={n}")
    tensors = (x, U, h0, d, v, w, bias, W, c)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _URNN.apply(*tensors, perm, float(eps))
    with torch.no_grad():
        return _forward(*tensors, perm, float(eps))[0]


def interleave(X: torch.Tensor) -> torch.Tensor:
    """[Re | Im] (..., 2n) -> (Re, Im) interleaved per unit, the real view of a complex (..., n)."""
    return X.view(*X.shape[:-1], 2, -1).transpose(-1, -2).reshape(X.shape)


def _steps(n: int, B: int, T: int) -> int:
    return min(max(1, CHUNK // (n * B)), T)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(k, B, n) complex -> (k B, 2n) real rows (a view)."""
    return torch.view_as_real(t).view(t.shape[0] * t.shape[1], -1)


def _forward(x, U, h0, d, v, w, bias, W, c, perm, eps, keep: bool = False):
    """Returns (y (B, T, p), kept): (Z, MAG, S, F, P) the pre-activations, modReLU's m and s and
    the outputs of F and F^-1 of every step (Z only unless ``keep``)."""
    B, T, _ = x.shape
    n, p = d.shape[-1], W.shape[0]
    xt = x.transpose(0, 1).reshape(T * B, -1)
    Z = U.new_empty(T, B, n, dtype=d.dtype)                      # xu, then z: filled a block at a time
    k = _steps(n, B, T)
    F, P = (torch.empty_like(Z) if keep else Z.new_empty(1, B, n) for _ in range(2))
    MAG, S = (torch.empty_like(Z.real) if keep else Z.real.new_empty(1, B, n) for _ in range(2))
    Fs, Ps, mags, ss = ((t.unbind(0) if keep else [t[0]] * T) for t in (F, P, MAG, S))
    Hb = [torch.empty_like(Z[:k]) for _ in range(2)]             # the states, a block at a time
    H = [Hb[(t // k) % 2][t % k] for t in range(T)]
    prev = [h0.expand(B, n)] + H[:-1]
    y = x.new_empty(T, B, p)
    (d1, d2, d3), (v1, v2), (w1, w2) = d, v.unsqueeze(1), w.unsqueeze(-1)
    a, fp, g, q = (torch.empty_like(Z[0]) for _ in range(4))
    coef, den = Z.new_empty(B, 1), torch.empty_like(Z[0].real)
    e_sqrt, e, one = (Z.real.new_tensor(t) for t in (eps, eps, 1.0))
    bme = bias - eps
    Zs = Z.unbind(0)
    for t in range(T):
        if t % k == 0:
            torch.mm(xt[t * B:(t + k) * B], U, out=_rows(Z[t:t + k]))
        torch.fft.fft(torch.mul(prev[t], d1, out=a), norm="ortho", out=Fs[t])         # F D1 h
        torch.addmm(Fs[t], torch.mm(Fs[t], w1, out=coef), v1, alpha=-1, out=fp)     # R1
        torch.index_select(fp, 1, perm, out=g).mul_(d2)                               # Π, D2
        torch.fft.ifft(g, norm="ortho", out=Ps[t])                                    # F^-1
        torch.addmm(Ps[t], torch.mm(Ps[t], w2, out=coef), v2, alpha=-1, out=q)      # R2
        Zs[t].addcmul_(q, d3)                                                         # xu + D3 (...)
        modrelu_scale_into(Zs[t].real, Zs[t].imag, bme, e_sqrt, e, one, mags[t], ss[t], den)
        torch.mul(Zs[t], ss[t], out=H[t])
        if t % k == k - 1 or t == T - 1:                          # the readout of a block of steps
            t0 = t - t % k
            torch.addmm(c, _rows(Hb[(t // k) % 2][:t + 1 - t0]), W.T, out=y[t0:t + 1].view(-1, p))
    return y.transpose(0, 1), ((Z, MAG, S, F, P) if keep else (Z,))


class _URNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, U, h0, d, v, w, bias, W, c, perm, eps):
        y, kept = _forward(x.detach(), U.detach(), h0.detach(), d.detach(), v.detach(), w.detach(), bias.detach(),
                           W.detach(), c.detach(), perm, eps, keep=True)
        ctx.eps = eps
        ctx.save_for_backward(x, U, h0, d, v, w, bias, W, perm, *kept)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        return _backward(ctx, grad_y)


def _backward(ctx, grad_y):
    x, U, h0, d, v, w, bias, W, perm, Z, MAG, S, F, P = ctx.saved_tensors
    eps, need = ctx.eps, ctx.needs_input_grad
    T, B, n = Z.shape
    gy = grad_y.transpose(0, 1).contiguous()                     # (T, B, p)
    xt = x.transpose(0, 1).reshape(T * B, -1)
    iperm = torch.argsort(perm)
    (d1c, d2c, d3c), vc, wc = (t.conj().resolve_conj() for t in (d, v, w))
    (v1c, v2c), (w1c, w2c) = vc.unsqueeze(-1), wc.unsqueeze(1)
    k = _steps(n, B, T)
    # per step of a block: dL/dh (G; the recurrent part added in place), its conjugate, dL/dz,
    # and the gradients at D2's output, at R1's output, at F's input and of the reflections' x w
    G, Gc, GZ, GG, GFP, GA = (Z.new_empty(k, B, n) for _ in range(6))
    GC1, GC2 = Z.new_empty(k, B, 1), Z.new_empty(k, B, 1)
    gq, gp, gg, gf = (Z.new_empty(B, n) for _ in range(4))
    carry = Z.new_zeros(B, n)                                    # dL/dh_{t0-1} from step t0, for the next block
    prev = Z.new_empty(k, B, n)
    dx = xt.new_empty(T, B, xt.shape[-1]) if need[0] else None
    dU, dd, dv, dw, dbias, dW = (torch.zeros_like(t) for t in (U, d, v, w, bias, W))
    dh0 = Z.new_zeros(B, n)
    e_sqrt = Z.real.new_tensor(eps)
    b = bias.expand(B, n)
    for t0 in range(k * ((T - 1) // k), -1, -k):
        t1 = min(t0 + k, T)
        nb, s0, R = t1 - t0, max(t0 - 1, 0), (t1 - t0) * B
        torch.mm(gy[t0:t1].view(R, -1), W, out=_rows(G[:nb]))     # dL/dh from the readout
        if t1 < T:
            G[nb - 1].add_(carry)
        Zb = Z[s0:t1]
        Hb = Zb * S[s0:t1]                                        # the states s0 .. t1-1
        alpha, beta, r = modrelu_jacobian(Zb[t0 - s0:], MAG[t0:t1], S[t0:t1], b, eps, e_sqrt)
        for i in range(nb - 1, -1, -1):
            torch.mul(G[i], alpha[i], out=GZ[i]).addcmul_(torch.conj_physical(G[i], out=Gc[i]), beta[i])
            torch.mul(GZ[i], d3c, out=gq)                                             # D3^H
            torch.addmm(gq, torch.mm(gq, v2c, out=GC2[i]), w2c, alpha=-1, out=gp)     # R2^H = R2
            torch.fft.fft(gp, norm="ortho", out=GG[i])                                # (F^-1)^H = F
            torch.index_select(torch.mul(GG[i], d2c, out=gg), 1, iperm, out=GFP[i])  # D2^H, Π^H
            torch.addmm(GFP[i], torch.mm(GFP[i], v1c, out=GC1[i]), w1c, alpha=-1, out=gf)   # R1
            torch.fft.ifft(gf, norm="ortho", out=GA[i])                               # F^H
            if i > 0:                                                                 # D1^H into dL/dh_{t-1}
                G[i - 1].addcmul_(GA[i], d1c)
            else:
                torch.mul(GA[i], d1c, out=carry if t0 > 0 else dh0)
        Hn, gz, Fb, Pb = Hb[t0 - s0:], GZ[:nb].view(R, n), F[t0:t1].view(R, n), P[t0:t1].view(R, n)
        dbias.add_((Gc[:nb] * (Zb[t0 - s0:] * r)).sum((0, 1)).real)          # sum of Re(conj(z) g) ds/db
        dW.addmm_(gy[t0:t1].view(R, -1).T, _rows(Hn))
        dU.addmm_(xt[t0 * B:t1 * B].T, _rows(GZ[:nb]))
        if need[0]:
            torch.mm(_rows(GZ[:nb]), U.T, out=dx[t0:t1].view(R, -1))
        if t0 > 0:
            prev[:nb] = Hb[:nb]
        else:
            prev[0], prev[1:nb] = h0.expand(B, n), Hb[:nb - 1]
        # diagonals: sum of conj(input) g_out; a reflection y = x - (x w) v: dv = -(x w)^H g_y,
        # dw = -x^H (g_y v^H)
        c1, c2 = Fb @ w[0].unsqueeze(-1), Pb @ w[1].unsqueeze(-1)
        dd[0].add_((GA[:nb] * prev[:nb].conj()).sum((0, 1)))
        fp = torch.addmm(Fb, c1, v[0].unsqueeze(0), alpha=-1)
        dd[1].add_((GG[:nb].view(R, n) * fp[:, perm].conj()).sum(0))
        dd[2].add_((gz * torch.addmm(Pb, c2, v[1].unsqueeze(0), alpha=-1).conj()).sum(0))
        dv[0].sub_((c1.conj().T @ GFP[:nb].view(R, n))[0])
        dv[1].sub_((c2.conj().T @ (gz * d3c))[0])
        dw[0].sub_((Fb.T @ GC1[:nb].view(R, 1).conj()).conj()[:, 0])
        dw[1].sub_((Pb.T @ GC2[:nb].view(R, 1).conj()).conj()[:, 0])
    dh0 = dh0 if h0.shape[0] == B else dh0.sum(0, keepdim=True)
    dc = gy.sum((0, 1))
    return (None if dx is None else dx.transpose(0, 1)), dU, dh0, dd, dv, dw, dbias, dW, dc, None, None
