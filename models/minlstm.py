"""minLSTM (Feng et al., "Were RNNs All We Needed?", arXiv:2410.01201, 2024), one layer.

The forget and input gates see only the input and are normalised to sum to one (the paper's
length-independence scaling, §3.2.3), so the state follows

    h_t = f'_t * h_{t-1} + i'_t * g(W_h x_t + b_h),   f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)

with f_t = sigmoid(W_f x_t + b_f), i_t = sigmoid(W_i x_t + b_i) (Algorithm 7). Everything else
(the parallel scan for ``fast=True`` and why it is not the paper's log-space one, the loop for
``fast=False``, h0, the readout, and why one layer has no nonlinearity across time) is minGRU's:
see mingru.py.

The authors' released code (github.com/BorealisAI/minRNNs) defaults to ``use_coeff_norm: False``
(unnormalised gates); this model follows the paper's Algorithms 7-8, which normalise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .mingru import MinimalRNN, g


def normalised_gates(k_f: torch.Tensor, k_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f' = f / (f + i) and i' = i / (f + i) from the pre-activations k_f, k_i.

    Written as f' = sigmoid(d), i' = sigmoid(-d) with d = log f - log i (the paper's Listing 10
    works with the same difference in log space): equal to the quotients, but where f and i
    both underflow (k below -745 in float64, -104 in float32) the quotient is 0/0 and this is not.
    """
    d = F.logsigmoid(k_f) - F.logsigmoid(k_i)
    return torch.sigmoid(d), torch.sigmoid(-d)


class MinLSTM(MinimalRNN):
    """minLSTM, one layer, with a linear readout at every step.

    Args:
        d_input: input features per step (m).
        d_output: outputs per step (p).
        n_hidden: hidden size n.
        forget_bias: added to the forget gate's initial bias. Default: ``3.0`` (the authors'
            ``forget_bias_init_scale: 3``, configs/default.yaml of BorealisAI/minRNNs).
        learn_h0: a trainable initial state h0, used as g(h0), as the authors' code; ``False``
            starts from h = 0. Default: ``True``.
        fast: the parallel scan (``True``) or the step-by-step loop (``False``); the same
            function. Default: ``True``.

    ``linear_f``, ``linear_i`` and ``linear_h`` are the paper's three maps (Algorithm 7), with
    PyTorch's ``nn.Linear`` init plus ``forget_bias`` on ``linear_f.bias``, as the authors' code;
    h0 ~ N(0, 1); the readout is Glorot-uniform with zero bias (the harness's convention, gru.py).

    Example::

        >>> model = MinLSTM(d_input=10, d_output=9, n_hidden=64)
        >>> model(torch.rand(2, 120, 10)).shape
        torch.Size([2, 120, 9])
    """

    name = "minlstm"
    description = "minLSTM: input-only forget/input gates normalised to sum 1, parallel scan (one layer)"
    paper = 'Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs All We Needed?", arXiv:2410.01201, 2024'
    linears = ("linear_f", "linear_i", "linear_h")

    def __init__(self, d_input: int, d_output: int, n_hidden: int, *, forget_bias: float = 3.0,
                 learn_h0: bool = True, fast: bool = True):
        super().__init__(d_input, d_output, n_hidden, learn_h0=learn_h0, fast=fast)
        self.forget_bias = float(forget_bias)
        with torch.no_grad():
            self.linear_f.bias.add_(self.forget_bias)     # on top of the default init, as the authors' code

    def coefficients(self, x):
        # Algorithm 7: h_t = f'_t h_{t-1} + i'_t g(h~_t)
        f, i = normalised_gates(self.linear_f(x), self.linear_i(x))
        return f, i * g(self.linear_h(x))
