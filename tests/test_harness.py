"""The harness foundation: per-group optimizer, run function, determinism, errors, CLI."""
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.cli import main as bench_main
from bench.config import RunConfig, resolve
from bench.models import build_model, get_model_class
from bench.optim import GroupOptimizer
from bench.run import run


def tiny(tmp_path, **kw):
    base = dict(model="scurnn", task="copying", seq_len=20, n_hidden=32, max_steps=300, val_every=100,
                runs_dir=str(tmp_path), wandb="disabled", quiet=True)
    base.update(kw)
    return RunConfig(**base)


# ---- per-group optimizer -------------------------------------------------------------------
def test_each_group_steps_with_its_own_class_and_rate():
    a, b, c = (torch.nn.Parameter(torch.tensor([1.0, -2.0])) for _ in range(3))
    opt = GroupOptimizer({"A": ([a], "keras_rmsprop", 0.1), "D": ([b], "torch_adam", 0.01), "other": ([c], "sgd", 0.5)})
    g = torch.tensor([0.3, -0.4])
    for p in (a, b, c):
        p.grad = g.clone()
    opt.step()
    # Keras RMSprop (decay 0.9, eps=1e-8 outside, starts at 0): v = 0.1 g^2; p -= lr g / (sqrt(v) + eps)
    expected_a = torch.tensor([1.0, -2.0]) - 0.1 * g / (torch.sqrt(0.1 * g * g) + 1e-8)
    # Adam first step: m_hat = g, v_hat = g^2 -> p -= lr g / (|g| + eps)
    expected_b = torch.tensor([1.0, -2.0]) - 0.01 * g / (g.abs() + 1e-8)
    expected_c = torch.tensor([1.0, -2.0]) - 0.5 * g
    torch.testing.assert_close(a.data, expected_a)
    torch.testing.assert_close(b.data, expected_b)
    torch.testing.assert_close(c.data, expected_c)
    assert [grp["name"] for grp in opt.param_groups] == ["A", "D", "other"]


def test_optimizer_state_resumes_to_identical_next_step():
    torch.manual_seed(0)
    model = build_model("scurnn", 3, 2, 6)
    spec = {"A": "rmsprop", "D": "adagrad", "other": "adam"}
    make = lambda m: GroupOptimizer({g: (ps, spec[g], 1e-2) for g, ps in m.param_groups().items()})
    x, y = torch.randn(4, 5, 3), torch.randn(4, 5, 2)

    def step(m, opt):
        opt.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        opt.step()

    opt = make(model)
    for _ in range(3):
        step(model, opt)
    # as a checkpoint would: serialised copies, not live references
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    twin = build_model("scurnn", 3, 2, 6)
    twin.load_state_dict(saved_model)
    twin_opt = make(twin)
    twin_opt.load_state_dict(saved_opt)
    step(model, opt)
    step(twin, twin_opt)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_param_groups_cover_every_parameter_once():
    model = build_model("scurnn", 10, 9, 8)
    opt = GroupOptimizer({g: (ps, "adam", 1e-3) for g, ps in model.param_groups().items()})
    seen = [id(p) for grp in opt.param_groups for p in grp["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())


def test_w_stays_unitary_after_200_steps_float32():
    torch.manual_seed(0)
    model = build_model("scurnn", 10, 9, 24)
    opts = {"A": "rmsprop", "D": "adam", "other": "rmsprop"}
    opt = GroupOptimizer({g: (ps, opts[g], 1e-2) for g, ps in model.param_groups().items()})
    x, y = torch.randn(8, 12, 10), torch.randint(0, 9, (8, 12))
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x).reshape(-1, 9), y.reshape(-1)).backward()
        opt.step()
    assert model.A_re.abs().max() > 0.5   # A really moved
    assert model.unitarity_error() < 1e-5


# ---- the run function ----------------------------------------------------------------------
def test_copying_goes_below_baseline(tmp_path):
    result = run(tiny(tmp_path))
    baseline = result["task_info"]["baseline"]
    assert baseline == pytest.approx(10 * torch.log(torch.tensor(8.0)).item() / 40)
    assert result["status"] == "completed"
    assert result["metrics"]["test_loss"] < 0.5 * baseline
    assert result["metrics"]["first_step_below_baseline"] is not None
    assert result["metrics"]["max_unitarity_error"] < 1e-5
    assert result["global_step"] == 300          # counts batches, not inner optimizer steps


def test_adding_goes_below_baseline(tmp_path):
    result = run(tiny(tmp_path, task="adding", seq_len=10, max_steps=400))
    assert result["metrics"]["test_mse"] < 0.8 * (1 / 6)


def test_same_seed_gives_identical_losses(tmp_path):
    curves = []
    for sub in ("a", "b"):
        result = run(tiny(tmp_path / sub, max_steps=60, val_every=30, seed=7))
        curves.append(pd.read_csv(Path(result["run_dir"]) / result["curves"])["train/loss"].dropna().tolist())
    assert len(curves[0]) >= 5 and curves[0] == curves[1]
    other = run(tiny(tmp_path / "c", max_steps=60, val_every=30, seed=8))
    assert pd.read_csv(Path(other["run_dir"]) / other["curves"])["train/loss"].dropna().tolist() != curves[0]


def test_global_norm_clipping(tmp_path):
    import lightning.pytorch as pl

    norms = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    run(tiny(tmp_path, max_steps=5, val_every=5, grad_clip=1e-3), callbacks=[Record()])
    assert len(norms) == 5 and max(norms) <= 1e-3 * (1 + 1e-4)


def test_result_json_contents(tmp_path):
    result = run(tiny(tmp_path, max_steps=20, val_every=10, opts={"A": ["adagrad", 1e-3]}))
    on_disk = json.loads((Path(result["run_dir"]) / "result.json").read_text())
    # generic names resolve to scuRNN's reference rules: the authors' NumPy update for A, TF1 for the rest
    assert on_disk["config"]["opts"] == {"A": ["scurnn_adagrad", 1e-3], "D": ["tf_adam", 1e-4],
                                         "other": ["tf_rmsprop", 1e-3]}
    described = on_disk["config"]["optimizers"]
    assert described["A"] == {"optimizer": "scurnn_adagrad", "requested": "adagrad", "reference_family": "scurnn",
                              "class": "bench.reference_optim.AccumulatorAdagrad", "lr": 1e-3, "eps": 1e-8,
                              "eps_placement": "outside", "initial_accumulator": 0.0,
                              "semantics": "scuRNN's NumPy update of A (Update_step_A, 'adagrad')"}
    assert described["other"]["initial_accumulator"] == 1.0 and described["other"]["eps"] == 1e-10
    assert on_disk["n_params"] == 32 * 32 + 2 * 32 + 2 * 32 * 10 + 2 * 32 * 9 + 9 + 2 * 32
    for key in ("seed", "code_version", "library_versions", "metrics", "curves", "config_hash", "wall_time_s"):
        assert key in on_disk
    assert on_disk["library_versions"]["torch"].startswith("2.")
    assert (Path(result["run_dir"]) / on_disk["checkpoints"]["last"]).exists()


def test_checkpoint_paths_are_relative_and_last_is_always_recorded(tmp_path, monkeypatch):
    """A default (relative) runs dir and one validation, whose checkpoint is both best and last."""
    monkeypatch.chdir(tmp_path)
    result = run(tiny(Path("runs"), max_steps=10, val_every=10))
    assert result["checkpoints"] == {"best": "checkpoints/best.ckpt", "last": "checkpoints/last.ckpt"}
    run_dir = Path(result["run_dir"])
    assert all((run_dir / p).is_file() for p in result["checkpoints"].values())


def test_result_records_paper_row_or_fallback(tmp_path, capsys):
    with_row = run(tiny(tmp_path, n_hidden=None, max_steps=2, val_every=2, batch_size=2))    # copying, T=20
    assert with_row["paper_row"]["n_hidden"] == 130 and with_row["paper_row"]["source"].startswith("§5.2 (T=2000)")
    assert with_row["paper_row"]["used_its_hidden_size"] is True
    assert with_row["fallback"] is None
    capsys.readouterr()
    cfg = tiny(tmp_path, model="gru", n_hidden=None, max_steps=2, val_every=2, batch_size=2, quiet=False)
    without = run(cfg)
    assert without["paper_row"] is None
    assert without["fallback"].startswith("no paper row for gru on copying at T=20: n=")
    assert "matched to scuRNN's paper budget" in without["fallback"]
    assert f"bench: note: {without['fallback']}" in capsys.readouterr().err


def test_paper_rows_of_the_second_scurnn_sizes():
    """Table 1's n = 250 and Table 2's n = 258 scuRNN rows, with §5.1/§5.4's learning rates."""
    from bench.paper import paper_rows

    rows = {(r.task, r.n_hidden): r for r in paper_rows("scurnn")}
    assert rows["mnist", 250].opts == {"A": ("rmsprop", 1e-5), "D": ("adagrad", 1e-4), "other": ("adam", 1e-3)}
    assert rows["pmnist", 250].opts["D"] == ("adagrad", 1e-3)
    assert rows["mnist", 250].reported == {"test_acc": 0.983} and rows["pmnist", 250].reported == {"test_acc": 0.962}
    assert rows["timit", 258].opts == {"A": ("adam", 1e-4), "D": ("adam", 1e-3), "other": ("adam", 1e-3)}
    assert rows["timit", 258].reported == {"val_mse": 1.84, "eval_mse": 1.67}
    cfg = resolve(RunConfig(model="scurnn", task="mnist", params=69_000))
    assert cfg.n_hidden == 250 and get_model_class("scurnn").n_params(250, 1, 10) == 69_010
    assert get_model_class("scurnn").n_params(258, 129, 129) == 200_853


def test_bench_params_shows_the_second_sizes(capsys):
    assert bench_main(["params", "--task", "mnist", "--params", "69k"]) == 0
    assert re.search(r"^\s+250\s+69,010\s+≈69k", capsys.readouterr().out, re.M)
    assert bench_main(["params", "--task", "timit", "--params", "200k"]) == 0
    assert re.search(r"^\s+258\s+200,853\s+≈200k", capsys.readouterr().out, re.M)


def test_eurnn_adding_t750_is_fft_style():
    cfg = resolve(RunConfig(model="eurnn", task="adding", scale="paper", seq_len=750))
    assert cfg.model_options["style"] == "fft" and cfg.fallback is None and "FFT" in cfg.paper_source


# ---- configuration and errors --------------------------------------------------------------
def test_paper_settings_resolve_for_scurnn():
    cfg = resolve(RunConfig(model="scurnn", task="copying", seq_len=1000))
    assert cfg.n_hidden == 130 and cfg.opts["A"] == ["scurnn_adagrad", 1e-4] and "§5.2" in cfg.paper_source
    cfg = resolve(RunConfig(model="scurnn", task="adding", seq_len=750, opts={"D": ["sgd", 0.1]}))
    assert cfg.n_hidden == 116 and cfg.opts == {"A": ["scurnn_rmsprop", 1e-4], "D": ["sgd", 0.1],
                                                "other": ["tf_rmsprop", 1e-3]}
    assert cfg.fallback is None
    cfg = resolve(RunConfig(model="scurnn", task="copying", params=16_482, scale="paper"))
    assert cfg.seq_len == 2000 and cfg.max_steps == 2000 and cfg.batch_size == 20


BAD_INPUTS = [
    (["run", "--model", "nope", "--task", "copying"], "unknown model 'nope'; known models: "),
    (["run", "--model", "scurnn", "--task", "nope"], "unknown task 'nope'; known tasks: "),
    (["run", "--model", "scurnn", "--task", "copying", "--opt", "A=lbfgs:1e-3"],
     "unknown optimizer 'lbfgs'; known optimizers: adagrad, adam, cayley, cayley_rms, keras_rmsprop, rmsprop, "
     "scurnn_adagrad, scurnn_adam, scurnn_rmsprop, sgd, tf_adagrad, tf_adam, tf_rmsprop, theano_rmsprop, "
     "torch_adagrad, torch_adam, torch_rmsprop"),
    (["run", "--model", "scurnn", "--task", "copying", "--opt", "B=adam:1e-3"],
     "unknown parameter group 'B' for model scurnn; its groups are: A, D, other"),
    (["run", "--model", "scurnn", "--task", "copying", "--opt", "A-rmsprop"],
     "malformed --opt 'A-rmsprop': expected GROUP=OPTIMIZER:LR[,KEY=VALUE...], e.g. A=rmsprop:1e-4"),
    (["run", "--model", "scornn", "--task", "copying", "--opt", "A=rmsprop:1e-4,alpha=0.9"],
     "optimizer 'tf_rmsprop' does not take the option(s) ['alpha']"),
    (["run", "--model", "scornn", "--task", "copying", "--opt", "A=rmsprop:1e-4,decay"],
     "option 'decay' is not KEY=VALUE"),
    (["run", "--model", "scornn", "--task", "copying", "--opt", "A=tf_rmsprop:1e-4,decay=2"],
     "optimizer option decay=2 is invalid: expected a number in [0, 1)"),
    (["run", "--model", "scurnn", "--task", "copying", "--opt", "A=adam:-1"],
     "--opt 'A=adam:-1': learning rate must be positive, got -1"),
    (["run", "--model", "scurnn", "--task", "copying", "--params", "lots"],
     "malformed parameter budget 'lots': expected a number like 16000, 16k or 1.2M"),
    (["run", "--model", "scurnn", "--task", "adding", "--seq-len", "2"],
     "adding: sequence length must be at least 3"),
    (["run", "--model", "scornn", "--task", "copying", "--model-opt", "rhoo=3"],
     "unknown model option(s) 'rhoo' for scornn; its options are: fast, rho, rho_frac"),
    (["run", "--model", "fcurnn", "--task", "copying", "--opt", "W=adam:1e-3"],
     "group 'W' of fcurnn is updated on its manifold: its optimizer must be one of cayley, cayley_rms, got 'adam'"),
    (["run", "--model", "scurnn", "--task", "copying", "--params", "10"],
     "--params 10: the closest scurnn on copying has 52 parameters (n=1), 420% off"),
    *([(["run", "--model", "scurnn", "--task", "copying", "--device", "cuda"],
        "--device cuda: this machine has no CUDA that torch can use")] if not torch.cuda.is_available() else []),
    (["run", "--model", "eurnn", "--task", "copying", "--model-opt", "complex=false", "--model-opt", "readout=re",
      "--opt", "D=adam:1e-3"],
     "unknown parameter group 'D' for model eurnn built with capacity=2, complex=false, readout=\"re\"; its groups "
     "are: W, other"),
    (["run", "--model", "eurnn", "--task", "copying", "--hidden", "7"],
     "eurnn: tunable style needs an even hidden size (rotations act on pairs), got n=7; try 6 or 8"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS)
def test_bad_inputs_give_clear_errors(argv, message, capsys, tmp_path):
    code = bench_main(argv + ["--runs-dir", str(tmp_path), "--wandb", "disabled"])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not any(tmp_path.iterdir())      # no work started, nothing written


@pytest.mark.parametrize("flag,value", [("--hidden", "0"), ("--seq-len", "-5"), ("--batch-size", "x"),
                                        ("--max-steps", "0")])
def test_non_positive_sizes_are_rejected_by_the_parser(flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main(["run", "--model", "scurnn", "--task", "copying", flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}: expected a positive integer, got '{value}'" in capsys.readouterr().err


def test_bench_run_subprocess_writes_result_and_offline_wandb(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)              # no ~/.netrc: W&B must fall back to offline, never prompt
    cmd = [sys.executable, "-m", "bench.cli", "run", "--model", "scurnn", "--task", "copying", "--seq-len", "10",
           "--hidden", "8", "--max-steps", "20", "--val-every", "10", "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = list((tmp_path / "runs").rglob("result.json"))
    assert len(results) == 1
    result = json.loads(results[0].read_text())
    assert result["status"] == "completed" and result["wandb"]["mode"] == "offline"
    assert list(results[0].parent.glob("wandb/offline-run-*/run-*.wandb"))


def test_bench_list(capsys):
    assert bench_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "scurnn" in out and "copying" in out and "adding" in out


def test_wandb_that_cannot_start_online_falls_back_to_offline(tmp_path, monkeypatch, capsys):
    """A key but no reachable server (a closed local port): a bounded wait, one line on stderr,
    the run completes and logs offline."""
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BENCH_WANDB_TIMEOUT", "3")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    from bench.tracking import wandb_mode

    assert wandb_mode("auto") == "online"
    result = run(tiny(tmp_path, max_steps=4, val_every=4, wandb="auto"))
    err = capsys.readouterr().err
    assert result["status"] == "completed" and result["wandb"]["mode"] == "offline"
    assert err.count("bench: warning: W&B could not start online") == 1 and "Traceback" not in err
    assert list(Path(result["run_dir"]).rglob("*.wandb"))
    import wandb

    wandb.teardown()        # wandb keeps this test's settings in a process-wide singleton: reset it


def test_wandb_mode_auto_without_credentials_is_offline(tmp_path):
    """Asked in a fresh process (wandb keeps its settings in a process-wide singleton)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"))
    ask = [sys.executable, "-c", "from bench.tracking import wandb_mode; print(wandb_mode('auto'))"]
    assert subprocess.run(ask, env=env, capture_output=True, text=True).stdout.strip() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password " + "c" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert subprocess.run(ask, env=env, capture_output=True, text=True).stdout.strip() == "online"


@pytest.mark.parametrize("task,metric", [("copying", "acc"), ("adding", "mse")])
def test_track_test_evaluates_the_test_split_at_every_validation_on_any_task(tmp_path, task, metric):
    """--track-test is not MNIST's alone: at the last validation the tracked test number is the
    final weights' test number, and the best over validations is the max (acc) or min (mse)."""
    import pandas as pd

    result = run(RunConfig(model="lstm", task=task, seq_len=10, n_hidden=8, max_steps=6, val_every=3,
                           runs_dir=str(tmp_path), wandb="disabled", quiet=True, track_test=True))
    curves = pd.read_csv(Path(result["run_dir"]) / result["curves"])
    tracked = curves[f"tracked_test/{metric}"].dropna()
    assert len(tracked) == 2                                        # validations at steps 3 and 6
    assert tracked.iloc[-1] == pytest.approx(result["metrics"][f"test_{metric}"], rel=1e-6)
    best = tracked.max() if metric == "acc" else tracked.min()
    assert result["metrics"][f"best_test_{metric}"] == pytest.approx(best)


def test_building_every_parser_imports_neither_torch_nor_lightning():
    """`bench --help` and every subcommand's --help stay fast (0.2 s measured, against 6.6 s when
    the parsers imported the registries): no parser may import torch, Lightning or Optuna."""
    code = ("import sys; from bench.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'lightning', 'optuna', 'wandb') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_default_data_seed_is_one_fact():
    from bench.tasks.base import DEFAULT_DATA_SEED

    assert RunConfig.data_seed == DEFAULT_DATA_SEED == 5544       # the references' seed


def test_result_names_the_paper_row_of_its_own_size():
    """The paper's second sizes are rows of their own: a run at scuRNN n=250 on MNIST records
    that row (its learning rates and numbers), not the n=116 default."""
    from bench.paper import paper_rows
    from bench.run import _paper_row

    for n in (116, 250):
        (expected,) = [r for r in paper_rows("scurnn", "mnist") if r.n_hidden == n]
        row = _paper_row(resolve(RunConfig(model="scurnn", task="mnist", n_hidden=n)))
        assert (row["n_hidden"], row["source"], row["reported"]) == (n, expected.source, expected.reported)
        assert row["used_its_hidden_size"]
    assert _paper_row(resolve(RunConfig(model="scurnn", task="mnist", n_hidden=64)))["n_hidden"] == 116


def test_resolve_returns_a_new_frozen_config_and_leaves_its_input_alone():
    import dataclasses

    given = RunConfig(model="scurnn", task="copying", opts={"A": ["adam", 1e-3]}, wandb="disabled")
    before = given.to_dict()
    cfg = resolve(given)
    assert given.to_dict() == before and not given.resolved           # the input is unchanged
    assert cfg.resolved and cfg.n_hidden and cfg.opts["A"] == ["scurnn_adam", 1e-3]   # the reference's Adam for A
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_steps = 1
    changed = cfg.with_(seed=7)
    assert (changed.seed, cfg.seed) == (7, 0) and changed.n_hidden == cfg.n_hidden
    assert resolve(given) == cfg                                       # the same input resolves alike
