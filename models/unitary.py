"""Shared unitary/orthogonal math: the scaled Cayley map, modReLU, complex-as-real helpers.

Conventions (as scoRNN.py, scuRNN.py): row vectors, ``h_t = sigma(x_t U + h_{t-1} W)``, and a
complex state ``h = a + ib`` stored as the real row ``[a | b]``. A complex matrix ``X + iY``
acting on the right is then the real block ``[[X, Y], [-Y, X]]``: one real GEMM per step.
"""
from __future__ import annotations

import math

import torch

from bench.errors import UnknownNameError

# ε of the reference modReLU (scuRNN.py, stwisdom/urnn models.py): inside the root and in the
# denominator, the placement "inside" of ``modrelu_scale`` (EUNN-tensorflow's is "outside").
MODRELU_EPS = 1e-5
MODRELU_PLACEMENTS = ("inside", "outside")


class _ScaleGrad(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def scale_grad(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    if not torch.is_tensor(scale):
        scale = torch.tensor(scale, dtype=x.dtype, device=x.device)
    return _ScaleGrad.apply(x, scale)


def skew_symmetric(free: torch.Tensor, n: int) -> torch.Tensor:
    """n x n real skew-symmetric matrix from its strict upper triangle (n(n-1)/2 values)."""
    rows, cols = torch.triu_indices(n, n, offset=1, device=free.device)
    upper = free.new_zeros(n, n).index_put((rows, cols), free)
    return upper - upper.T


def symmetric(free: torch.Tensor, n: int) -> torch.Tensor:
    """n x n real symmetric matrix from its upper triangle with diagonal (n(n+1)/2 values)."""
    rows, cols = torch.triu_indices(n, n, offset=0, device=free.device)
    upper = free.new_zeros(n, n).index_put((rows, cols), free)
    return upper + upper.T - torch.diag(torch.diagonal(upper))


def skew_hermitian(re_free: torch.Tensor, im_free: torch.Tensor, n: int) -> torch.Tensor:
    """Complex skew-Hermitian A = S + iT, S skew-symmetric, T symmetric (n^2 real dof)."""
    return torch.complex(skew_symmetric(re_free, n), symmetric(im_free, n))


def scaled_cayley(A: torch.Tensor, d: torch.Tensor, *, solve_dtype: torch.dtype | None = None) -> torch.Tensor:
    """W = (I + A)^{-1} (I - A) D with D = diag(d), by a linear solve (never an inverse).

    One code path for real and complex: ``A`` skew-symmetric with ``d`` in {+1, -1}^n gives
    scoRNN's orthogonal W; ``A`` skew-Hermitian with ``d = e^{i theta}`` gives scuRNN's unitary
    W. ``I + A`` is always invertible (its singular values are >= 1).

    Args:
        A: (n, n) skew-symmetric or skew-Hermitian matrix.
        d: (n,) diagonal of D, real or complex.
        solve_dtype: dtype to solve in (e.g. ``torch.complex128``) before casting back to
            ``A.dtype``; the reference codes build W in float64. Default: ``A.dtype``.

    Example::

        >>> A = skew_hermitian(torch.randn(6), torch.randn(10), 4)
        >>> W = scaled_cayley(A, torch.exp(1j * torch.rand(4)))
        >>> torch.allclose(W.mH @ W, torch.eye(4, dtype=W.dtype), atol=1e-5)
        True
    """
    out_dtype = torch.promote_types(A.dtype, d.dtype)
    work = solve_dtype or out_dtype
    if out_dtype.is_complex and not work.is_complex:
        work = torch.complex128 if work == torch.float64 else torch.complex64
    return (cayley(A.to(work)) * d.to(work).unsqueeze(-2)).to(out_dtype)


def cayley(A: torch.Tensor, right: torch.Tensor | None = None) -> torch.Tensor:
    """The Cayley map ``(I + A)^{-1} (I - A)``, times ``right`` if given, by one linear solve in
    ``A``'s dtype (never an inverse).

    Used by ``scaled_cayley`` (scoRNN's and scuRNN's W) and by the multiplicative Cayley step of
    the full-capacity uRNN (``bench/optim.py``, ``CayleyStep``: ``A`` = lr/2 times the
    skew-Hermitian direction, ``right`` = W).
    """
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(eye + A, eye - A if right is None else (eye - A) @ right)


def complex_to_real_block(W: torch.Tensor) -> torch.Tensor:
    """Complex (n, n) -> real (2n, 2n) block ``[[X, Y], [-Y, X]]`` for right multiplication."""
    X, Y = W.real, W.imag
    return torch.cat([torch.cat([X, Y], dim=1), torch.cat([-Y, X], dim=1)], dim=0)


def modrelu_scale(sq: torch.Tensor, bias: torch.Tensor, eps: float = MODRELU_EPS,
                  placement: str = "inside") -> torch.Tensor:
    """The factor s of a complex modReLU ``z -> s z`` per complex unit, from ``sq = Re^2 + Im^2``.

    ``placement`` says where ε sits; the two are different formulas, each a reference code's own:

    - ``"inside"`` (the paper's eq. (5) as scuRNN.py and stwisdom/urnn models.py compute it):
      ``s = ReLU(|z|_eps + b) / (|z|_eps + eps)`` with ``|z|_eps = sqrt(|z|^2 + eps)``;
    - ``"outside"`` (EUNN-tensorflow): ``s = ReLU(|z|_e + b) / |z|_e`` with
      ``|z|_e = sqrt(|z|^2 + 1e-12) + eps``; the 1e-12 keeps the gradient finite at z = 0.
    """
    if placement == "inside":
        mag = torch.sqrt(sq + eps)
        return torch.relu(mag + bias) / (mag + eps)
    if placement == "outside":
        norm = torch.sqrt(sq + 1e-12) + eps
        return torch.relu(norm + bias) / norm
    raise UnknownNameError(f"unknown modReLU placement {placement!r}; known placements: {', '.join(MODRELU_PLACEMENTS)}")


def modrelu_complex(z: torch.Tensor, bias: torch.Tensor, eps: float = MODRELU_EPS,
                    placement: str = "inside") -> torch.Tensor:
    """Complex modReLU (``modrelu_scale``) on a real ``[Re | Im]`` row of length 2n.

    Default: the paper's eq. (5), ``z * ReLU(|z|_eps + b) / (|z|_eps + eps)`` with
    ``|z|_eps = sqrt(Re^2 + Im^2 + eps)``.
    """
    n = bias.shape[-1]
    re, im = z[..., :n], z[..., n:]
    scale = modrelu_scale(re * re + im * im, bias, eps, placement)
    return z * torch.cat([scale, scale], dim=-1)


def modrelu_cplx(z: torch.Tensor, bias: torch.Tensor, eps: float = MODRELU_EPS,
                 placement: str = "inside") -> torch.Tensor:
    """``modrelu_complex`` on a complex tensor (same formula, same ε)."""
    return z * modrelu_scale(z.real * z.real + z.imag * z.imag, bias, eps, placement)


def modrelu_real(z: torch.Tensor, bias: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Real modReLU ``sign(z) * ReLU(|z| + b)`` of scoRNN/expRNN; EURNN's real version adds its
    ε to |z| (``sign(z) * ReLU(|z| + eps + b)``)."""
    mag = z.abs() + eps if eps else z.abs()
    return torch.sign(z) * torch.relu(mag + bias)


def modrelu_scale_(re: torch.Tensor, im: torch.Tensor, bias: torch.Tensor, eps_sqrt: torch.Tensor,
                   eps: torch.Tensor, out: tuple = (None, None, None)) -> tuple:
    """The fast path's ``modrelu_scale`` ("inside" form, eps_sqrt in the root): in-place ops
    written into ``out = (mag, s, den)`` when given (models/fastpath.py's per-step scratch) and
    the same ops, bit for bit, on fresh tensors otherwise. Returns (|z|_eps, s, |z|_eps + eps)."""
    mag, s, den = out
    mag = torch.mul(re, re, out=mag).addcmul_(im, im).add_(eps_sqrt).sqrt_()   # |z|_eps
    den = torch.add(mag, eps, out=den)
    s = torch.add(mag, bias, out=s).relu_().div_(den)                           # ReLU(|z| + b) / (|z| + eps)
    return mag, s, den


def modrelu_real_(z: torch.Tensor, bias: torch.Tensor, scratch: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The fast path's ``modrelu_real`` with in-place ops: writes it into ``out`` (which may be z:
    z is read first) through ``scratch`` of z's shape."""
    torch.abs(z, out=scratch).add_(bias).relu_()
    return torch.sign(z, out=out).mul_(scratch)


def cayley_block_init(n: int, *, high: float = math.pi / 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Strict-upper-triangle values of scoRNN's "Cayley init" of a skew-symmetric A.

    u_j ~ U(0, high), s_j = -tan(u_j / 2) at positions (0,1), (2,3), ...; the Cayley image of
    each 2x2 block is a rotation by u_j (scoRNN.py; expRNN's cayley_init_). Returns n(n-1)/2 values
    in the ``torch.triu_indices(n, n, 1)`` order.
    """
    u = torch.rand(n // 2, generator=generator, dtype=torch.float64) * high
    s = -torch.tan(u / 2)
    rows, cols = torch.triu_indices(n, n, offset=1)
    free = torch.zeros(rows.numel(), dtype=torch.float64)
    block = (rows % 2 == 0) & (cols == rows + 1)
    free[block] = s
    return free


class _SkewExpm(torch.autograd.Function):
    """exp(A) for a skew-symmetric or skew-Hermitian A: the forward is ``torch.linalg.matrix_exp``;
    the backward uses that A is normal. torch's own backward takes the exponential of the 2n x 2n
    block matrix [[A^H, G], [0, A^H]] (22 ms at n = 193 in float32 against 3 ms for the forward);
    here one Hermitian eigendecomposition iA = Q diag(mu) Q^H gives the adjoint Fréchet derivative

        L(A^H, G) = Q [ (Q^H G Q) o Phi ] Q^H,   Phi_jk = exp(i (mu_j + mu_k) / 2) sinc((mu_j - mu_k) / 2pi),

    the divided differences of exp at the eigenvalues i mu of A^H = -A (normalised sinc: exact
    and stable for equal eigenvalues, which block initialisations have)."""

    @staticmethod
    def forward(ctx, A):
        ctx.save_for_backward(A)
        return torch.linalg.matrix_exp(A)

    @staticmethod
    def backward(ctx, G):
        (A,) = ctx.saved_tensors
        work = torch.complex128 if A.dtype in (torch.float64, torch.complex128) else torch.complex64
        mu, Q = torch.linalg.eigh(1j * A.to(work))
        phi = torch.polar(torch.sinc((mu[:, None] - mu[None, :]) / (2 * math.pi)), (mu[:, None] + mu[None, :]) / 2)
        grad = Q @ ((Q.mH @ G.to(work) @ Q) * phi) @ Q.mH
        return (grad if A.is_complex() else grad.real).to(A.dtype)


def expm_skew(A: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.matrix_exp(A)`` for a skew-symmetric (real) or skew-Hermitian (complex) A,
    with a faster backward (``_SkewExpm``). The caller guarantees the skew structure."""
    return _SkewExpm.apply(A)


def unroll(xu: torch.Tensor, h0: torch.Tensor, W, activation, record=None) -> torch.Tensor:
    """Plain recurrence ``h_t = activation(xu_t + h_{t-1} W)`` over all steps.

    xu: (B, L, d) input projections for every step (one GEMM outside the loop);
    h0: (1, d) or (B, d); W: the (d, d) matrix (one ``addmm`` per step), or a function
    ``h -> h W`` for a recurrent operator that costs less to apply than to multiply out
    (urnn: O(n log n), eurnn: O(Ln) per step; then ``xu_t + W(h)``); record: ``None``, or a
    function called with ``(z_t, h_t)`` after every step (the diagnostics' recorder, see
    ``RecurrentModel.recording``: h_t is the state the next step reads, so the gradient of the
    loss at h_t is the total derivative). Returns (B, L, d). Nothing here synchronises the device.
    """
    h = h0.expand(xu.shape[0], -1)
    operator = callable(W)
    outs = []
    # unbind, not xu[:, t]: the backward of each slice would allocate a full (B, L, d) zero tensor
    for x_t in xu.unbind(1):
        z = x_t + W(h) if operator else torch.addmm(x_t, h, W)
        h = activation(z)
        if record is not None:
            record(z, h)
        outs.append(h)
    return torch.stack(outs, dim=1)


def unitarity_error(W: torch.Tensor) -> float:
    """max |W^H W - I| (W complex or real)."""
    eye = torch.eye(W.shape[-1], dtype=W.dtype, device=W.device)
    return (W.mH @ W - eye).abs().max().item()
