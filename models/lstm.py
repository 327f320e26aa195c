"""LSTM baseline on PyTorch's fused ``nn.LSTM`` kernel (paper §5).

The paper's LSTM (TF ``BasicLSTMCell``) has one bias per gate and a configurable forget-gate
bias: +1.0 on MNIST, permuted MNIST, copying and adding, -4 on TIMIT (paper §5).
``nn.LSTM`` stores two bias vectors whose sum is all that matters; we keep the second one at
zero and frozen, so the trainable scalars are exactly the degrees of freedom.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import RecurrentModel, glorot_, torch_rnn_states


class LSTM(RecurrentModel):
    """LSTM with a linear readout at every step.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n.
        forget_bias: initial value of the forget-gate bias. Default: ``1.0`` (the paper's
            value on MNIST/copying/adding; it uses ``-4`` on TIMIT).

    Gate weights are Glorot-uniform over the concatenated ``[m + n, 4n]`` kernel, as TF's
    ``BasicLSTMCell``; biases start at 0 except the forget gate; h0 = c0 = 0.

    Example::

        >>> model = LSTM(d_input=10, d_output=9, n_hidden=68)
        >>> model(torch.rand(2, 120, 10)).shape
        torch.Size([2, 120, 9])
    """

    name = "lstm"
    description = "LSTM (torch.nn.LSTM fused kernel), configurable forget-gate bias"
    paper = "Hochreiter & Schmidhuber, Neural Computation 1997"
    groups = ("other",)
    default_opts = {"other": ("rmsprop", 1e-3)}
    optimizer_semantics = {"*": "tf"}   # the paper's LSTM runs use the TF1 scoRNN/scuRNN scripts (their LSTM branch)

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, forget_bias: float = 1.0):
        super().__init__(d_input, d_output, n_hidden)
        n = n_hidden
        self.forget_bias = float(forget_bias)
        self.rnn = nn.LSTM(d_input, n, batch_first=True)
        bound = (6.0 / (d_input + n + 4 * n)) ** 0.5
        with torch.no_grad():
            self.rnn.weight_ih_l0.uniform_(-bound, bound)
            self.rnn.weight_hh_l0.uniform_(-bound, bound)
            self.rnn.bias_ih_l0.zero_()
            self.rnn.bias_ih_l0[n:2 * n] = self.forget_bias      # PyTorch gate order: i, f, g, o
            self.rnn.bias_hh_l0.zero_()
        self.rnn.bias_hh_l0.requires_grad_(False)                 # duplicate of bias_ih: not a dof
        self.readout = nn.Linear(n, d_output)
        glorot_(self.readout.weight.data.T)
        nn.init.zeros_(self.readout.bias)

    @classmethod
    def n_params(cls, n: int, d_input: int, d_output: int, *, forget_bias: float = 1.0) -> int:
        # four gates: n(m + n) weights + n biases each; readout np + p
        return 4 * (n * (d_input + n) + n) + n * d_output + d_output

    @classmethod
    def valid_hidden(cls, n: int, *, forget_bias: float = 1.0) -> None:
        super().valid_hidden(n)

    def param_groups(self):
        return {"other": [p for p in self.parameters() if p.requires_grad]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, m) -> (B, L, p)
        if self.recording_now:
            return self.readout(torch_rnn_states(self.rnn, x, self.step_record()))
        hs, _ = self.rnn(x)
        return self.readout(hs)
