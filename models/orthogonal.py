"""Shared cell of the real orthogonal models h_t = modReLU(x_t U + h_{t-1} W) (scoRNN, expRNN).

A subclass builds its orthogonal W in ``recurrent_matrix()`` and owns the parameters ``U``,
``bias`` (modReLU), ``h0`` and ``readout``; this class runs the recurrence, through the fast
path (models/fastpath.py) unless ``fast`` is False or a recorder is attached (models/base.py,
RECORDING).
"""
from __future__ import annotations

import torch

from .base import RecurrentModel
from .fastpath import recurrence
from .unitary import modrelu_real, unitarity_error, unroll


class RealModReLURNN(RecurrentModel):
    fast: bool = True

    def recurrent_matrix(self) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define recurrent_matrix()")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        W = self.recurrent_matrix()                                       # built once per forward
        xu = x @ self.U
        if self.fast_now:
            hs = recurrence(xu, self.h0, W, self.bias, "modrelu_real")
        else:
            hs = unroll(xu, self.h0, W, lambda z: modrelu_real(z, self.bias), self.step_record(self.bias))
        return self.readout(hs)

    @torch.no_grad()
    def unitarity_error(self) -> float:
        return unitarity_error(self.recurrent_matrix())
