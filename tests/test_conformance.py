"""The model conformance kit (bench/conformance.py, ``bench check-model``): every registered model
passes it, a deliberately broken model fails exactly the check meant to catch it, and the
command's output and exit codes.

The kit's checks are the contract of models/base.py; tests/test_models.py keeps its own, larger
grid per option set. The whole file runs in about 10 s on one core for 13 models.
"""
import os
import re

import pytest
import torch

from bench.conformance import CHECKS, Check, valid_n, check_model
from bench.models import MODELS
from bench.models.fastpath import recurrence
from bench.models.scornn import SCORNN

# Checks a registered model is known to fail: (model, check) -> why. They must still FAIL (a fix
# fails this test until its entry is deleted); every other check must pass or be a justified n/a.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _claims(cls) -> dict[str, bool]:
    """The checks that may be n/a, and whether the model makes the claim they check."""
    model = cls(3, 2, valid_n(cls, 8, {}))
    return {"unitary": model.unitarity_error() is not None, "fast-vs-step": "fast" in cls.options()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_passes_the_kit(name):
    checks = check_model(name)
    assert [c.name for c in checks] == list(CHECKS)
    claims = _claims(MODELS[name])
    for c in checks:
        assert c.figure, c
        if (name, c.name) in KNOWN_FAILURES:
            assert c.passed is False, f"{name} {c.name} passes now ({c.figure}): delete it from KNOWN_FAILURES"
        elif c.passed is None:
            assert not claims.get(c.name, True), f"{name} {c.name} is n/a, but the model makes that claim: {c.detail}"
            assert c.detail, c
        else:
            assert c.passed, f"{name} {c.name}: {c.figure} ({c.detail})"


# ---- the kit can fail ---------------------------------------------------------------------
def unregistered(base, name: str, **members) -> type:
    """A subclass of ``base`` called ``name`` that stays out of the registry (a class registers
    itself under its ``name`` when it is created, so the name is set afterwards)."""
    cls = type(f"Broken_{name}", (base,), {"name": "", "__module__": __name__, **members})
    cls.name = name
    return cls


def _n_params_off_by_one(cls, n, d_input, d_output, **options):
    return SCORNN.n_params.__func__(cls, n, d_input, d_output, **options) + 1


def _drifting_init(self, *args, **kwargs):
    SCORNN.__init__(self, *args, **kwargs)
    self.register_buffer("scale", torch.ones(()))


def _fast_offset_forward(self, x):
    out = SCORNN.forward(self, x)
    return out + 1e-9 * x.sum(-1, keepdim=True) if self.fast else out      # the tolerance is 1e-10


def _clock_seeded_init(self, *args, **kwargs):
    SCORNN.__init__(self, *args, **kwargs)
    clock = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    with torch.no_grad():
        self.U.add_(torch.randn(self.U.shape, generator=clock) * 1e-3)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * 0.9


BROKEN = {
    # n_params one more than the model has
    "params": dict(n_params=classmethod(_n_params_off_by_one)),
    # post_step scales W by 1 + 1e-6 (a projection that overshoots): 1e-4 off after 100 steps
    "unitary": dict(__init__=_drifting_init,
                    recurrent_matrix=lambda self: SCORNN.recurrent_matrix(self) * self.scale,
                    post_step=lambda self: self.scale.mul_(1 + 1e-6)),
    # the fast path is off by rounding-sized terms
    "fast-vs-step": dict(forward=_fast_offset_forward),
    # initialises from an unseeded generator
    "determinism": dict(__init__=_clock_seeded_init),
}


@pytest.mark.parametrize("check", sorted(BROKEN))
def test_a_broken_model_fails_exactly_its_check(check):
    cls = unregistered(SCORNN, f"broken-{check}", **BROKEN[check])
    assert f"broken-{check}" not in MODELS
    results = {c.name: c for c in check_model(cls)}
    failed = sorted(name for name, c in results.items() if c.passed is False)
    assert failed == [check], {name: (c.figure, c.detail) for name, c in results.items() if c.passed is not True}
    assert results[check].status == "FAIL"


@pytest.mark.filterwarnings("ignore:Using a target size")      # adding's mse_loss broadcasts the wrong width
def test_a_wrong_backward_fails_the_gradient_check_and_a_wrong_width_the_shape_checks():
    def short_gradient(self, x):                       # the input projection's gradient is 10% short
        xu = _ScaleGrad.apply(x @ self.U)
        return self.readout(recurrence(xu, self.h0, self.recurrent_matrix(), self.bias, "modrelu_real"))

    results = {c.name: c for c in check_model(unregistered(SCORNN, "broken-grad", forward=short_gradient))}
    assert sorted(k for k, c in results.items() if c.passed is False) == ["gradients"]
    assert re.fullmatch(r"max rel err \d\.\de-0[12]", results["gradients"].figure), results["gradients"].figure

    wide = unregistered(SCORNN, "broken-shape", forward=lambda self, x: SCORNN.forward(self, x).repeat(1, 1, 2))
    results = {c.name: c for c in check_model(wide)}
    assert results["shapes"].passed is False and "expected (2, 5, 1)" in results["shapes"].detail
    # copying's, MNIST's and the speech tasks' losses refuse the doubled width; adding's broadcasts
    # it with a warning, which is why the shapes check exists
    assert results["tasks"].passed is False


def test_not_applicable_is_never_passed_and_errors_are_failures():
    from bench.models.lstm import LSTM

    results = {c.name: c for c in check_model("lstm")}
    assert results["unitary"].status == results["fast-vs-step"].status == "n/a"
    assert results["unitary"].passed is None and "no unitary" in results["unitary"].detail

    def boom(self, x):
        raise RuntimeError("kaput")

    results = {c.name: c for c in check_model(unregistered(LSTM, "broken-forward", forward=boom))}
    assert results["shapes"] == Check("shapes", False, "error: RuntimeError", "RuntimeError: kaput")
    assert {c.name for c in results.values() if c.passed is True} == {"params", "groups", "budget"}


# ---- the command ----------------------------------------------------------------------------
def test_check_model_command_prints_one_line_per_check_and_a_summary(capsys):
    from bench.cli import main

    assert main(["check-model", "gru"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["gru", c] for c in CHECKS]
    assert re.fullmatch(r"gru  gradients     ok    max rel err \d\.\de-\d\d", lines[list(CHECKS).index("gradients")])
    assert lines[list(CHECKS).index("unitary")].startswith(
        "gru  unitary       n/a   no claim  (unitarity_error() is None")
    assert lines[-1] == "1 model, 9 checks: 7 ok, 2 n/a, 0 failed"


def test_check_model_command_exits_1_on_a_failure_and_2_on_an_unknown_name(capsys, monkeypatch):
    from bench.cli import main

    monkeypatch.setitem(MODELS, "broken", unregistered(SCORNN, "broken", **BROKEN["params"]))
    assert main(["check-model", "broken"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("broken  params        FAIL  0/4 sizes, n=4 m=1 p=10: 64 != 65  (count_params()")
    assert out[-1] == "1 model, 9 checks: 8 ok, 0 n/a, 1 failed (broken params)"

    assert main(["check-model", "gru", "nosuch"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""                           # unknown names fail before any check runs
    known = ", ".join(sorted(MODELS))
    assert captured.err == f"bench check-model: error: unknown model 'nosuch'; known models: {known}\n"
    assert main(["check-model"]) == 2
    assert "name one or more models, or --all" in capsys.readouterr().err
