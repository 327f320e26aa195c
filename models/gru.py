"""GRU baseline on PyTorch's fused ``nn.GRU`` kernel (not in the paper; a common baseline today).

``nn.GRU`` stores two bias vectors. For the reset and update gates only their sum matters
(b_ir + b_hr, b_iz + b_hz), so those 2n hidden-side entries are kept at zero by a gradient
mask and are not counted; the candidate gate's hidden bias b_hn sits inside r * (W_hn h + b_hn)
and is a real degree of freedom. Storage is therefore 2n scalars larger than ``n_params``.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import RecurrentModel, glorot_, torch_rnn_states


class GRU(RecurrentModel):
    """GRU with a linear readout at every step.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n.

    Gate weights are Glorot-uniform over the concatenated ``[m + n, 3n]`` kernel; biases 0;
    h0 = 0.

    Example::

        >>> model = GRU(d_input=2, d_output=1, n_hidden=64)
        >>> model(torch.rand(2, 200, 2)).shape
        torch.Size([2, 200, 1])
    """

    name = "gru"
    description = "GRU (torch.nn.GRU fused kernel)"
    paper = "Cho et al., EMNLP 2014"
    groups = ("other",)
    default_opts = {"other": ("rmsprop", 1e-3)}
    optimizer_semantics = {"*": "torch"}   # not in the paper; no reference code: PyTorch's

    def __init__(self, d_input: int, d_output: int, n_hidden: int):
        super().__init__(d_input, d_output, n_hidden)
        n = n_hidden
        self.rnn = nn.GRU(d_input, n, batch_first=True)
        bound = (6.0 / (d_input + n + 3 * n)) ** 0.5
        with torch.no_grad():
            self.rnn.weight_ih_l0.uniform_(-bound, bound)
            self.rnn.weight_hh_l0.uniform_(-bound, bound)
            self.rnn.bias_ih_l0.zero_()
            self.rnn.bias_hh_l0.zero_()
        mask = torch.ones(3 * n)
        mask[:2 * n] = 0.0                      # b_hr, b_hz duplicate b_ir, b_iz: never updated
        self.register_buffer("_bias_hh_mask", mask, persistent=False)
        self.rnn.bias_hh_l0.register_hook(lambda g: g * self._bias_hh_mask)
        self.readout = nn.Linear(n, d_output)
        glorot_(self.readout.weight.data.T)
        nn.init.zeros_(self.readout.bias)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int) -> int:
        # three gates: n(m + n) weights + n input biases each; b_hn n; readout np + p
        return 3 * (n * (d_input + n) + n) + n + n * d_output + d_output

    @classmethod
    def valid_hidden(cls, n: int) -> None:
        super().valid_hidden(n)

    def count_params(self) -> int:
        # storage minus the 2n masked (redundant) hidden-side biases
        return super().count_params() - 2 * self.n_hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        if self.recording_now:
            return self.readout(torch_rnn_states(self.rnn, x, self.step_record()))
        hs, _ = self.rnn(x)
        return self.readout(hs)
