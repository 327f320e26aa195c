"""Shared cell of the complex unitary models h_t = modReLU(x_t U + h_{t-1} W) (scuRNN, fcuRNN, uRNN).

The complex state h = a + ib is the real row [a | b] (models/unitary.py). A subclass builds its
unitary W in ``recurrent_matrix()`` (complex (n, n), row convention) and calls ``init_io`` after
creating its recurrent parameters; ``init_io`` adds the parameters this class uses: ``U``
([Re U | Im U]), the modReLU ``bias``, the trainable ``h0`` and the ``readout`` on [Re h | Im h].
The recurrence runs through the fast path (models/fastpath.py) when ``fast`` is True and no
recorder is attached (models/base.py, RECORDING), else the plain loop ``unitary.unroll``; a model
whose W costs less to apply than to multiply out overrides ``use_dense`` and ``factored_states``
(urnn).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import RecurrentModel, glorot_
from .fastpath import recurrence
from .unitary import MODRELU_EPS, complex_to_real_block, modrelu_complex, unitarity_error, unroll


class ComplexModReLURNN(RecurrentModel):
    fast: bool = False

    def init_io(self, h0_bound: float) -> None:
        """``U`` (Glorot), modReLU ``bias`` ~ U(-0.01, 0.01), ``h0`` ~ U(-h0_bound, h0_bound) and the
        Glorot ``readout`` with zero bias, drawn in this order."""
        n = self.n_hidden
        self.U = nn.Parameter(glorot_(torch.empty(self.d_input, 2 * n)))              # [Re U | Im U]
        self.bias = nn.Parameter(torch.empty(n).uniform_(-0.01, 0.01))                # modReLU bias
        self.h0 = nn.Parameter(torch.empty(1, 2 * n).uniform_(-h0_bound, h0_bound))
        self.readout = nn.Linear(2 * n, self.d_output)
        glorot_(self.readout.weight.data.T)
        nn.init.zeros_(self.readout.bias)

    def io_parameters(self) -> list[nn.Parameter]:
        """The parameters ``init_io`` made (the ``other`` group)."""
        return [self.U, self.bias, self.h0, *self.readout.parameters()]

    def recurrent_matrix(self) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define recurrent_matrix()")

    def use_dense(self, device: torch.device) -> bool:
        """Multiply W out once per forward (default) or apply it per step (``factored_states``)."""
        return True

    def factored_states(self, xu: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define factored_states() to apply W per step")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        return self.readout(self.states(x @ self.U))

    def states(self, xu: torch.Tensor) -> torch.Tensor:
        """(B, L, 2n) states for the input projections xu (B, L, 2n)."""
        if not self.use_dense(xu.device):
            return self.factored_states(xu)
        W = complex_to_real_block(self.recurrent_matrix())          # built once per forward
        if self.fast_now:
            return recurrence(xu, self.h0, W, self.bias, "modrelu_complex")
        return unroll(xu, self.h0, W, lambda z: modrelu_complex(z, self.bias), self.modrelu_record())

    def modrelu_record(self):
        """The recorder's callback for this model's modReLU (None unless recording)."""
        return self.step_record(self.bias, complex_=True, eps=MODRELU_EPS)

    @torch.no_grad()
    def unitarity_error(self) -> float:
        return unitarity_error(self.recurrent_matrix())
