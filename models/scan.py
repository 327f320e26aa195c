"""The first-order linear recurrence h_t = a_t * h_{t-1} + b_t (elementwise), two ways.

``linear_scan`` is the parallel form lru, mingru and minlstm train with (s4d unrolls the same
recurrence into a convolution kernel instead): a Hillis-Steele doubling scan, log2(T)
whole-sequence tensor operations instead of T small ones. It only multiplies and adds (no division by running products, no logarithms), so
it holds for real and complex a, with plain autograd, and equals the loop to rounding.
``sequential_scan`` is that step-by-step loop (the models' ``fast=False``). PyTorch's own
associative scan is a private prototype (``torch._higher_order_ops``), hence these few lines.
"""
from __future__ import annotations

import torch


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """All h_t of h_t = a_t * h_{t-1} + b_t along dim 1; ``b`` is (B, T, ...), ``a`` broadcasts to it,
    ``h0`` (B or 1, ...) defaults to 0."""
    a = a.expand_as(b)
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0.unsqueeze(1), b[:, 1:]], dim=1)
    length, k = b.shape[1], 1
    while k < length:
        # after this pass b_t holds the sum over the last 2k inputs, a_t their combined decay
        b = torch.cat([b[:, :k], b[:, k:] + a[:, k:] * b[:, :-k]], dim=1)
        if 2 * k < length:
            a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    return b


def sequential_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, record=None) -> torch.Tensor:
    """The same recurrence one step at a time: the reference ``linear_scan`` is tested against.
    ``record``: None, or a function called with ``(None, h_t)`` after every step (diagnostics:
    models/base.py, RECORDING)."""
    a = a.expand_as(b)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.expand_as(b[:, 0])
    out = []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        if record is not None:
            record(None, h)
        out.append(h)
    return torch.stack(out, dim=1)
