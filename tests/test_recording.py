"""The diagnostics' recording hook (models/base.py, RECORDING) on every registered model.

Oracles: a recording forward gives the numbers of the ordinary (fused) forward; it reports one
state per time step; and the gradient the recorder sees at h_t is the *total* derivative of the
loss, checked against an independent computation: the same model restarted from h_t (h0 = h_t)
on the inputs after t, whose gradient at its h0 is dL/dh_t by construction.
"""
import pytest
import torch

from bench.diagnostics import record_recurrence, snapshot
from bench.models import MODELS, build_model
from test_models import ALL, IDS

B, L, M, P = 3, 9, 2, 4
BUDGET = 300            # parameters: a few hidden units of every model
# models whose state follows h_t = act(xu_t + h_{t-1} W) from the h0 they hold: restartable at h_t
RESTART = {"scurnn", "fcurnn", "urnn", "scornn", "exprnn", "dtriv", "ornn", "nnrnn", "eurnn"}


def _model(name, opts):
    torch.manual_seed(0)
    n = MODELS[name].hidden_for_budget(BUDGET, M, P, **opts)
    return build_model(name, d_input=M, d_output=P, n_hidden=n, **opts).double()


def _loss(out):
    return (out[:, -1] ** 2).sum()          # only the last step enters the loss


@pytest.mark.parametrize("name,opts", ALL, ids=IDS)
def test_recording_gives_the_same_numbers_and_one_state_per_step(name, opts, one_thread):
    model = _model(name, opts)
    x = torch.randn(B, L, M, dtype=torch.float64)
    want = model(x)
    with record_recurrence(model) as rec:
        got = model(x)
    assert model.recorder is None                          # detached after the block
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert len(rec.states) == L and all(h.shape[0] == B and h.requires_grad for h in rec.states)
    grads = torch.autograd.grad(_loss(got), rec.states, allow_unused=True)
    assert all(g is not None for g in grads) and all(g.abs().sum() > 0 for g in grads[:-1]), name


def _as_real(h):
    return torch.cat([h.real, h.imag], dim=-1) if h.is_complex() else h


@pytest.mark.parametrize("name,opts", [c for c in ALL if c[0] in RESTART], ids=[i for c, i in zip(ALL, IDS) if c[0] in RESTART])
def test_recorded_gradient_is_the_total_derivative(name, opts, one_thread):
    model = _model(name, opts)
    x = torch.randn(B, L, M, dtype=torch.float64)
    with record_recurrence(model) as rec:
        out = model(x)
    grads = torch.autograd.grad(_loss(out), rec.states)
    for t in (1, L // 2, L - 2):
        restarted = _model(name, opts)
        h_t = _as_real(rec.states[t].detach()).clone().requires_grad_(True)
        if isinstance(restarted.h0, torch.nn.Parameter):
            restarted.h0 = torch.nn.Parameter(h_t)
        else:                                              # a buffer (eurnn)
            restarted.h0 = h_t
        rest = restarted(x[:, t + 1:])
        torch.testing.assert_close(rest[:, -1], out[:, -1], rtol=1e-10, atol=1e-10)
        (want,) = torch.autograd.grad(_loss(rest), restarted.h0)
        torch.testing.assert_close(_as_real(grads[t]), want, rtol=1e-9, atol=1e-12, msg=f"{name} t={t}")


def test_modrelu_statistics_come_from_the_modrelu_models_only(one_thread):
    x = torch.randn(B, L, M, dtype=torch.float64)
    for name, has in (("scurnn", True), ("urnn", True), ("eurnn", True), ("scornn", True), ("lstm", False),
                      ("ornn", False), ("mingru", False)):
        model = _model(name, {})
        with record_recurrence(model) as rec:
            model(x)
        summary = rec.modrelu_summary()
        assert (summary is not None) == has, name
        if has:
            assert summary["n_values"] == B * L * model.n_hidden, name


def test_a_model_that_reports_nothing_says_so():
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.cumsum(1)

    class Task:
        @staticmethod
        def loss(out, batch):
            return out.square().mean()

    snap = snapshot(type("M", (Plain,), {"unitarity_error": lambda self: None})(), Task(), (torch.randn(2, 3, 1),))
    assert snap["grad_norm"] is None and "reported no states" in snap["grad_norm_unavailable"]
