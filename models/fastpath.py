"""A fast recurrence ``h_t = act(xu_t + h_{t-1} W)`` with a hand-written backward pass.

``unitary.unroll`` is the plain reference: autograd records about ten small nodes per time step
and the weight gradient is T separate small GEMMs. Here one ``torch.autograd.Function`` covers the
whole sequence (this project's design; the reference codes use framework autodiff):

* forward: one in-place ``addmm`` plus a few in-place elementwise ops per step, no autograd
  graph. It keeps one state-sized buffer for the backward: the states H, computed in place of
  the pre-activations, for the real activations; the pre-activations z for complex modReLU
  (whose |z|_eps, scale s and H = z s the backward recomputes, bit for bit, block by block).
* backward: per step one ``addmm`` (``g_h = dL/dh_t + g_z_{t+1} W^T``) and the elementwise
  activation backward, whose factors are computed for a block of steps at once (bulk ops on
  cache-sized blocks, no state-sized scratch); the weight gradient ``dW = H_prev^T G_z`` is
  one GEMM over all (T, B) rows (one per block for complex modReLU), ``dxu = G_z``, and
  ``dbias`` and ``dh0`` are bulk reductions.

Everything runs time-major, (L, B, d), so that each step's rows are contiguous.

No step reads a tensor value on the host, so the same code runs on a GPU without
synchronisation inside the time loop. Double backward is not supported.

Example::

    >>> xu, W = torch.randn(2, 5, 8), torch.randn(8, 8) / 3
    >>> h0, bias = torch.zeros(1, 8), torch.zeros(4)
    >>> recurrence(xu, h0, W, bias, "modrelu_complex").shape
    torch.Size([2, 5, 8])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.errors import ConfigError, UnknownNameError
from . import fastpath_native
from .unitary import MODRELU_EPS, modrelu_real_, modrelu_scale_

# Activations with their bias convention: "modrelu_complex" acts on a [Re | Im] state of 2n with
# a bias of n; "modrelu_real" has a bias of d; the others take no bias (put it into xu).
ACTIVATIONS = ("modrelu_complex", "modrelu_real", "leaky_relu", "tanh", "identity")
NEEDS_BIAS = ("modrelu_complex", "modrelu_real")
# Elements per block of backward scratch (steps x batch x units): 256 KB in float32, about L2.
CHUNK = 1 << 16


def recurrence(xu: torch.Tensor, h0: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None = None,
               activation: str = "modrelu_complex", *, eps: float = MODRELU_EPS,
               eps_sqrt: float | None = None, slope: float = 0.1) -> torch.Tensor:
    """``h_t = act(xu_t + h_{t-1} W)`` for t = 1..L; same numbers as ``unitary.unroll``.

    Args:
        xu: (B, L, d) input projections of every step.
        h0: (1, d) (shared by the batch) or (B, d) initial state.
        W: (d, d) recurrent matrix, row convention.
        bias: modReLU bias, (n,) with d = 2n for ``"modrelu_complex"``, (d,) for
            ``"modrelu_real"``; ``None`` for the other activations.
        activation: one of ``ACTIVATIONS``. Default: ``"modrelu_complex"``.
        eps: complex modReLU ``z * ReLU(m + b) / (m + eps)``. Default: ``MODRELU_EPS``.
        eps_sqrt: ``m = sqrt(Re^2 + Im^2 + eps_sqrt)``. Default: ``eps``.
        slope: negative slope of ``"leaky_relu"``. Default: ``0.1``.

    Returns:
        (B, L, d) hidden states (a time-major buffer seen batch-first).
    """
    cfg = _config(xu, h0, W, bias, activation, eps, eps_sqrt, slope)
    tensors = (xu, h0, W) if bias is None else (xu, h0, W, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _Recurrence.apply(xu, h0, W, bias, cfg)
    with torch.no_grad():
        Z = _time_major(xu)
        native = _native(Z)
        H = torch.empty_like(Z) if native is not None and activation == "modrelu_complex" else Z
        _forward(Z, H, h0, W, bias, cfg, native)      # the Python loops work in place: Z becomes H
        return H.transpose(0, 1)


def _config(xu, h0, W, bias, activation, eps, eps_sqrt, slope) -> tuple:
    if activation not in ACTIVATIONS:
        raise UnknownNameError(f"unknown activation {activation!r}; known activations: {', '.join(ACTIVATIONS)}")
    if xu.dim() != 3 or W.dim() != 2 or W.shape[0] != W.shape[1] or xu.shape[-1] != W.shape[0]:
        raise ConfigError(f"recurrence needs xu (B, L, d) and W (d, d); got xu {tuple(xu.shape)}, W {tuple(W.shape)}")
    B, _, d = xu.shape
    if h0.dim() != 2 or h0.shape[-1] != d or h0.shape[0] not in (1, B):
        raise ConfigError(f"h0 must be (1, {d}) or ({B}, {d}); got {tuple(h0.shape)}")
    if activation in NEEDS_BIAS:
        want = d // 2 if activation == "modrelu_complex" else d
        if bias is None or bias.shape != (want,) or (activation == "modrelu_complex" and d % 2):
            got = None if bias is None else tuple(bias.shape)
            raise ConfigError(f"{activation} on a state of {d} needs a bias of shape ({want},); got {got}")
    elif bias is not None:
        raise ConfigError(f"activation {activation!r} takes no bias (add it to xu); got one of shape {tuple(bias.shape)}")
    return activation, float(eps), float(eps if eps_sqrt is None else eps_sqrt), float(slope)


def _time_major(xu: torch.Tensor) -> torch.Tensor:
    """A fresh (L, B, d) copy of xu (always a copy: the loop writes into it)."""
    Z = torch.empty((xu.shape[1], xu.shape[0], xu.shape[2]), dtype=xu.dtype, device=xu.device)
    Z.copy_(xu.transpose(0, 1))
    return Z


def _scalars(Z: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """eps_sqrt and eps as 0-dim tensors: a Python float argument costs a scalar-to-tensor
    conversion per call, and both passes must round alike."""
    return Z.new_tensor(cfg[2]), Z.new_tensor(cfg[1])


def _native(Z: torch.Tensor):
    """The compiled loops (models/fastpath_native.py) for a CPU tensor, else ``None``."""
    return fastpath_native.kernel() if Z.device.type == "cpu" else None


def _forward(Z: torch.Tensor, H: torch.Tensor, h0, W, bias, cfg, native=None) -> None:
    """Z (L, B, d) holds xu and receives the pre-activations; H receives the states (H may be Z;
    the compiled loops want H separate for complex modReLU and H is Z for the others)."""
    activation, eps, eps_sqrt, slope = cfg
    if native is not None:
        native.forward(Z, H, h0, W, bias, ACTIVATIONS.index(activation), eps, eps_sqrt, slope)
        return
    L, B, d = Z.shape
    h = h0.expand(B, d)
    if activation == "modrelu_complex":
        n = d // 2
        m, den, s = Z.new_empty(B, n), Z.new_empty(B, n), Z.new_empty(B, 1, n)   # scratch rows
        s0 = s[:, 0]
        # every per-step view made once, in C++ (Python indexing costs microseconds per view)
        Zs, Hs, Z3s, H3s = Z.unbind(0), H.unbind(0), Z.view(L, B, 2, n).unbind(0), H.view(L, B, 2, n).unbind(0)
        Re, Im = Z[..., :n].unbind(0), Z[..., n:].unbind(0)
        e_sqrt, e = _scalars(Z, cfg)
        for t in range(L):
            Zs[t].addmm_(h, W)
            modrelu_scale_(Re[t], Im[t], bias, e_sqrt, e, out=(m, s0, den))   # s = ReLU(|z| + b) / (|z| + eps)
            torch.mul(Z3s[t], s, out=H3s[t])
            h = Hs[t]
    elif activation == "modrelu_real":
        a = Z.new_empty(B, d)
        for z, h_next in zip(Z.unbind(0), H.unbind(0)):
            h = modrelu_real_(z.addmm_(h, W), bias, a, h_next)      # H may be Z
    else:
        act = {"leaky_relu": lambda z: F.leaky_relu_(z, slope), "tanh": torch.tanh_,
               "identity": lambda z: z}[activation]
        for z in Z.unbind(0):
            h = act(z.addmm_(h, W))


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xu, h0, W, bias, cfg):
        Z = _time_major(xu.detach())
        ctx.cfg, ctx.native = cfg, _native(Z)
        # complex modReLU keeps z and recomputes |z|_eps, s and H = z s block by block in the
        # backward; the real activations keep H only (computed in place of z)
        H = torch.empty_like(Z) if cfg[0] == "modrelu_complex" else Z
        _forward(Z, H, h0.detach(), W.detach(), None if bias is None else bias.detach(), cfg, ctx.native)
        ctx.save_for_backward(h0, W, bias, Z)
        return H.transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        activation, eps, eps_sqrt, slope = ctx.cfg
        h0, W, bias, Z = ctx.saved_tensors
        H = Z                                                  # the real activations' states
        B, L, d = grad_out.shape
        need_W, need_b = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        G = _time_major(grad_out)                              # dL/dh_t, becomes dL/dz_t in place
        Gs, Wt = G.unbind(0), W.T
        dW = G.new_zeros(d, d) if need_W else None
        dbias = G.new_zeros(bias.shape) if need_b else None
        if ctx.native is not None:
            db = ctx.native.backward(G, Z, H, Wt, bias, ACTIVATIONS.index(activation), eps, eps_sqrt, slope,
                                     dW, max(1, CHUNK // (B * d)))      # complex modReLU: dW too, in blocks
            if need_b:
                dbias = db
        # The per-step activation factors are computed for a block of steps at a time: bulk ops
        # on blocks that stay in cache, and no state-sized scratch buffer (no page faults either).
        elif activation == "modrelu_complex":
            n = d // 2
            k = max(1, CHUNK // (B * n))
            e_sqrt, e = _scalars(Z, ctx.cfg)
            Z3 = Z.view(L, B, 2, n)
            G3s, Gre, Gim = G.view(L, B, 2, n).unbind(0), G[..., :n].unbind(0), G[..., n:].unbind(0)
            Zre, Zim, Z3s = Z[..., :n].unbind(0), Z[..., n:].unbind(0), Z3.unbind(0)
            cd = G.new_empty(B, 1, n)
            for t0 in range(k * ((L - 1) // k), -1, -k):
                t1 = min(t0 + k, L)
                # dL/dz = s g + c z <g, z> per complex unit, c = (ds/d|z|) / |z|
                # = (eps - b) / ((|z| + eps)^2 |z|) where the ReLU passes, else s = c = 0
                mag, S, den = modrelu_scale_(Z[t0:t1, ..., :n], Z[t0:t1, ..., n:], bias, e_sqrt, e)
                off = S == 0
                c = torch.mul(den, den).mul_(mag)
                torch.div(eps - bias, c, out=c).masked_fill_(off, 0)
                dot = torch.empty_like(mag)                            # <g_h, z> per unit and step
                Ss, cs = S.unsqueeze(2).unbind(0), c.unsqueeze(2).unbind(0)
                dots, dots3 = dot.unbind(0), dot.unsqueeze(2).unbind(0)
                for t in range(t1 - 1, t0 - 1, -1):
                    if t < L - 1:
                        Gs[t].addmm_(Gs[t + 1], Wt)
                    i = t - t0
                    torch.mul(Gre[t], Zre[t], out=dots[i]).addcmul_(Gim[t], Zim[t])
                    torch.mul(cs[i], dots3[i], out=cd)
                    G3s[t].mul_(Ss[i]).addcmul_(Z3s[t], cd)
                if need_b:                                             # ds/db = 1 / (|z| + eps) where on
                    dbias.add_(dot.div_(den).masked_fill_(off, 0).sum((0, 1)))
                t2 = min(t1, L - 1)
                if need_W and t2 > t0:                                 # += h_t^T g_z_{t+1}, h = z s
                    Hc = (Z3[t0:t2] * S[:t2 - t0].unsqueeze(2)).view(-1, d)
                    dW.addmm_(Hc.T, G[t0 + 1:t2 + 1].reshape(-1, d))
        else:
            k = max(1, CHUNK // (B * d))
            for t0 in range(k * ((L - 1) // k), -1, -k):
                t1 = min(t0 + k, L)
                Hc = H[t0:t1]
                if activation == "modrelu_real":
                    factor = (Hc != 0).to(H.dtype)
                elif activation == "leaky_relu":
                    factor = torch.full_like(Hc, slope).masked_fill_(Hc > 0, 1.0)
                elif activation == "tanh":
                    factor = torch.mul(Hc, Hc).neg_().add_(1)          # 1 - h^2
                else:
                    factor = None
                for t in range(t1 - 1, t0 - 1, -1):
                    if t < L - 1:
                        Gs[t].addmm_(Gs[t + 1], Wt)
                    if factor is not None:
                        Gs[t].mul_(factor[t - t0])
                if need_b:                                             # modrelu_real: ds/db = sign(h)
                    dbias.add_(torch.sign(Hc).mul_(G[t0:t1]).sum((0, 1)))
        if need_W and L > 1 and activation != "modrelu_complex":   # both loops: one GEMM over all steps
            dW.addmm_(H[:-1].reshape(-1, d).T, G[1:].reshape(-1, d))
        g0 = G[0] if h0.shape[0] == B else G[0].sum(0, keepdim=True)
        if need_W:
            dW.addmm_(h0.expand(g0.shape[0], d).T, g0)
        dh0 = g0 @ Wt if ctx.needs_input_grad[1] else None
        dxu = G.transpose(0, 1) if ctx.needs_input_grad[0] else None
        return dxu, dh0, dW, dbias, None
