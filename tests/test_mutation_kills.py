"""Tests that kill the mutants docs/mutation.md lists as surviving and "not covered".

Each test is an oracle: the expected values are computed here, from the documented formula or
protocol (a hand-written loop, a closed form, a hand-made table), not by re-running the code
under test. Every test is small (CPU, one thread, well under a second each).

Covered, by module:

* models/scan.py: ``linear_scan`` equals the step-by-step recurrence (written out here) for
  every length 1..17, real and complex decay, with and without h0.
* models/unitary.py: ``cayley(A, right=W)``, ``scaled_cayley``'s ``solve_dtype`` promotion,
  ``scale_grad`` in float64, ``modrelu_complex`` on (B, T, 2n), ``cayley_block_init``'s
  rotation angles and its generator, ``modrelu_scale``'s unknown-placement message,
  ``unitarity_error``.
* tasks/synthetic.py, tasks/adding.py, tasks/copying.py: the seed each batch is drawn from,
  independence from the global RNG, loaders in index order, the number of batches, the
  adding task's seq_len check, loss and metrics; Copying.metrics.
* bench/curves.py: ``summarise`` on a hand-made table (every key), ``read_curves`` joining
  resumed parts.
* bench/reference_optim.py: option validation (boundaries and messages), the constructor
  defaults, Adagrad with eps inside the root.
"""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch

from bench.curves import read_curves, summarise
from bench.errors import ConfigError, UnknownNameError
from bench.models.scan import linear_scan, sequential_scan
from bench.models.unitary import (cayley, cayley_block_init, modrelu_complex, modrelu_scale,
                                  scale_grad, scaled_cayley, skew_hermitian, skew_symmetric,
                                  unitarity_error)
from bench.reference_optim import AccumulatorAdagrad, BiasCorrectedAdam, MeanSquareRMSprop
from bench.tasks.adding import Adding, make_adding_batch
from bench.tasks.copying import Copying, make_copying_batch
from bench.tasks.synthetic import SeededBatches, SyntheticDataModule

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- models/scan.py

def _loop(a, b, h0):
    """h_t = a_t h_{t-1} + b_t, one Python step at a time on plain indexing (the oracle)."""
    B, T = b.shape[:2]
    out = torch.zeros_like(b)
    for i in range(B):
        h = torch.zeros_like(b[i, 0]) if h0 is None else h0[i].clone()
        for t in range(T):
            h = a[i, t] * h + b[i, t]
            out[i, t] = h
    return out


@pytest.mark.parametrize("complex_a", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0=0", "h0"])
def test_linear_scan_equals_the_loop_for_every_length(complex_a, with_h0):
    g = _gen(11)
    dtype = torch.complex128 if complex_a else torch.float64
    for T in range(1, 18):
        B, n = 2, 3
        a = torch.randn(B, T, n, generator=g, dtype=dtype) * 0.9
        b = torch.randn(B, T, n, generator=g, dtype=dtype)
        h0 = torch.randn(B, n, generator=g, dtype=dtype) if with_h0 else None
        expected = _loop(a, b, h0)
        got = linear_scan(a, b, h0)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=f"linear_scan, T={T}")
        torch.testing.assert_close(sequential_scan(a, b, h0), expected, rtol=1e-12, atol=1e-12,
                                   msg=f"sequential_scan, T={T}")


def test_linear_scan_broadcast_decay():
    """a of shape (1, T, n) broadcasts over the batch."""
    g = _gen(3)
    for T in (3, 5, 6, 9, 17):
        a = torch.rand(1, T, 4, generator=g, dtype=torch.float64)
        b = torch.randn(3, T, 4, generator=g, dtype=torch.float64)
        torch.testing.assert_close(linear_scan(a, b), _loop(a.expand_as(b), b, None), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- models/unitary.py

def _skew(n, g, dtype=torch.float64):
    M = torch.randn(n, n, generator=g, dtype=dtype)
    return M - M.mH


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_cayley_with_right_factor(dtype):
    g = _gen(5)
    n = 6
    A = _skew(n, g, dtype) * 0.7
    W = torch.randn(n, n, generator=g, dtype=dtype)
    eye = torch.eye(n, dtype=dtype)
    plain = torch.linalg.inv(eye + A) @ (eye - A)            # oracle by an explicit inverse
    torch.testing.assert_close(cayley(A), plain, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cayley(A, right=W), plain @ W, rtol=1e-10, atol=1e-10)


def _solve_ref(A, d, work, out_dtype):
    """scaled_cayley's documented computation in the ``work`` dtype, written out."""
    Aw = A.to(work)
    eye = torch.eye(A.shape[-1], dtype=work)
    return (torch.linalg.solve(eye + Aw, eye - Aw) * d.to(work).unsqueeze(-2)).to(out_dtype)


def _complex_case(n, dtype):
    g = _gen(17)
    A = skew_hermitian(torch.randn(n * (n - 1) // 2, generator=g, dtype=torch.float64),
                       torch.randn(n * (n + 1) // 2, generator=g, dtype=torch.float64), n).to(dtype)
    d = torch.exp(1j * torch.rand(n, generator=g, dtype=torch.float64)).to(dtype)
    return A, d


def test_scaled_cayley_real_solve_dtype_on_complex128_means_complex128():
    A, d = _complex_case(12, torch.complex128)
    W = scaled_cayley(A, d, solve_dtype=torch.float64)
    assert W.dtype == torch.complex128
    assert torch.equal(W, scaled_cayley(A, d, solve_dtype=torch.complex128))
    assert torch.equal(W, _solve_ref(A, d, torch.complex128, torch.complex128))
    assert unitarity_error(W) < 1e-12


def test_scaled_cayley_real_solve_dtype_on_complex64_means_complex64():
    A, d = _complex_case(16, torch.complex64)
    W = scaled_cayley(A, d, solve_dtype=torch.float32)
    assert W.dtype == torch.complex64
    assert torch.equal(W, scaled_cayley(A, d, solve_dtype=torch.complex64))
    assert torch.equal(W, _solve_ref(A, d, torch.complex64, torch.complex64))
    # not the same bits as solving in complex128 (the case must be able to tell them apart)
    assert not torch.equal(W, _solve_ref(A, d, torch.complex128, torch.complex64))


def test_scaled_cayley_float64_solve_dtype_on_complex64_means_complex128():
    A, d = _complex_case(16, torch.complex64)
    W = scaled_cayley(A, d, solve_dtype=torch.float64)
    assert W.dtype == torch.complex64
    assert torch.equal(W, _solve_ref(A, d, torch.complex128, torch.complex64))
    assert not torch.equal(W, _solve_ref(A, d, torch.complex64, torch.complex64))


def test_scaled_cayley_wider_solve_dtype_is_used():
    A, d = _complex_case(16, torch.complex64)
    W = scaled_cayley(A, d, solve_dtype=torch.complex128)
    assert W.dtype == torch.complex64
    assert torch.equal(W, _solve_ref(A, d, torch.complex128, torch.complex64))
    assert not torch.equal(W, _solve_ref(A, d, torch.complex64, torch.complex64))


def test_scaled_cayley_narrower_solve_dtype_casts_d_too():
    g = _gen(23)
    n = 16
    A = _skew(n, g)
    d = 1 + torch.rand(n, generator=g, dtype=torch.float64) / 3      # not +-1: its rounding shows
    W = scaled_cayley(A, d, solve_dtype=torch.float32)
    assert W.dtype == torch.float64
    eye = torch.eye(n, dtype=torch.float32)
    Af = A.float()
    expected = (torch.linalg.solve(eye + Af, eye - Af) * d.float().unsqueeze(-2)).double()
    assert torch.equal(W, expected)
    # every entry is a float32 number (a float64 d would leave float64 products)
    assert torch.equal(W, W.float().double())


def test_scale_grad_float64_scale_is_exact():
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = scale_grad(x, 0.1)
    assert torch.equal(y, x)
    (y * torch.arange(1.0, 6.0, dtype=torch.float64)).sum().backward()
    assert torch.equal(x.grad, torch.arange(1.0, 6.0, dtype=torch.float64) * 0.1)
    assert x.grad.dtype == torch.float64


def test_modrelu_complex_on_a_sequence_equals_each_step():
    g = _gen(29)
    B, T, n = 3, 4, 5
    z = torch.randn(B, T, 2 * n, generator=g, dtype=torch.float64)
    bias = torch.randn(n, generator=g, dtype=torch.float64) * 0.5
    eps = 1e-5
    out = modrelu_complex(z, bias)
    assert out.shape == z.shape
    for t in range(T):
        re, im = z[:, t, :n], z[:, t, n:]
        mag = torch.sqrt(re ** 2 + im ** 2 + eps)
        s = torch.clamp(mag + bias, min=0) / (mag + eps)
        torch.testing.assert_close(out[:, t], torch.cat([re * s, im * s], dim=-1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[:, t], modrelu_complex(z[:, t], bias), rtol=0, atol=0)


@pytest.mark.parametrize("n", [6, 7])
def test_cayley_block_init_rotation_angles(n):
    free = cayley_block_init(n, generator=_gen(31))
    u = torch.rand(n // 2, generator=_gen(31), dtype=torch.float64) * (math.pi / 2)
    assert free.dtype == torch.float64 and free.shape == (n * (n - 1) // 2,)
    A = skew_symmetric(free, n)
    # each 2x2 block of the Cayley image is the rotation by u_j: [[cos u, sin u], [-sin u, cos u]]
    W = torch.linalg.solve(torch.eye(n, dtype=torch.float64) + A, torch.eye(n, dtype=torch.float64) - A)
    expected = torch.eye(n, dtype=torch.float64)
    for j, uj in enumerate(u.tolist()):
        i = 2 * j
        expected[i, i] = expected[i + 1, i + 1] = math.cos(uj)
        expected[i, i + 1], expected[i + 1, i] = math.sin(uj), -math.sin(uj)
    torch.testing.assert_close(W, expected, rtol=0, atol=1e-12)
    # the free values themselves: -tan(u/2) at (0,1), (2,3), ..., zero elsewhere
    rows, cols = torch.triu_indices(n, n, 1).tolist()
    for (r, c), v in zip(zip(rows, cols), free.tolist()):
        want = -math.tan(u[r // 2].item() / 2) if (r % 2 == 0 and c == r + 1) else 0.0
        assert v == pytest.approx(want, abs=1e-15)


def test_cayley_block_init_depends_on_its_generator_only():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        first = cayley_block_init(8, generator=_gen(4))
        torch.manual_seed(2)
        torch.rand(3)
        second = cayley_block_init(8, generator=_gen(4))
    assert torch.equal(first, second)
    assert not torch.equal(first, cayley_block_init(8, generator=_gen(5)))


def test_modrelu_scale_unknown_placement_message():
    with pytest.raises(UnknownNameError,
                       match=re.escape("unknown modReLU placement 'middle'; known placements: inside, outside")):
        modrelu_scale(torch.ones(3), torch.zeros(3), placement="middle")


def test_unitarity_error_values():
    assert unitarity_error(2 * torch.eye(4, dtype=torch.float64)) == pytest.approx(3.0, abs=0)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=_gen(2), dtype=torch.float64))
    assert unitarity_error(Q) < 1e-12
    U, _ = torch.linalg.qr(torch.randn(5, 5, generator=_gen(3), dtype=torch.complex128))
    assert unitarity_error(U) < 1e-12
    # one column doubled: W^H W - I has a 3 on the diagonal
    D = torch.eye(3, dtype=torch.float64)
    D[1, 1] = 2.0
    assert unitarity_error(D) == 3.0
    assert unitarity_error(0.5 * torch.eye(3, dtype=torch.complex128)) == pytest.approx(0.75, abs=0)


# --------------------------------------------------------------------------- tasks

def _seed_of(g, b):
    """A make_batch that reports the seed of the generator it was handed (and the batch size)."""
    return torch.tensor([g.initial_seed(), b])


@pytest.mark.parametrize("data_seed", [0, 1, 5544])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_batch_k_is_drawn_from_its_documented_seed(data_seed, split):
    data = SeededBatches(_seed_of, n_sequences=200, batch_size=20, seed=data_seed, split=split)
    for k in (0, 1, 7):
        expected = (data_seed * 1_000_003 + SPLIT_IDS[split] * 7_919) % 2**62 + k
        assert data[k].tolist() == [expected, 20]


def test_data_seed_0_batches_pinned():
    """data_seed 0: train batch k is drawn from seed k, val from 7919 + k, test from 15838 + k;
    the batch is the protocol's sequence around the symbols randint(1, 9) draws from that seed."""
    T, B = 5, 3
    for split, base in (("train", 0), ("val", 7919), ("test", 15838)):
        data = SeededBatches(lambda g, b: make_copying_batch(g, b, T), 100, B, 0, split)
        for k in (0, 1):
            x, y = data[k]
            symbols = torch.randint(1, 9, (B, 10), generator=_gen(base + k))
            seq = torch.cat([symbols, torch.zeros(B, T - 1, dtype=torch.long),
                             torch.full((B, 1), 9), torch.zeros(B, 10, dtype=torch.long)], dim=1)
            assert torch.equal(x.argmax(-1), seq) and torch.equal(x.sum(-1), torch.ones(B, T + 20))
            assert torch.equal(y, torch.cat([torch.zeros(B, T + 10, dtype=torch.long), symbols], dim=1))
    # and pinned as numbers: batch 0 of train at data_seed 0 (seed 0), checked against the same
    # draw spelled out above
    first = SeededBatches(lambda g, b: make_copying_batch(g, b, T), 100, 2, 0, "train")[0][1][:, -10:]
    assert torch.equal(first, torch.randint(1, 9, (2, 10), generator=_gen(0)))


def test_different_data_seeds_give_different_batches():
    seen = set()
    for s in range(201):
        seen.add(SeededBatches(_seed_of, 10, 5, s, "train").base_seed)
    assert len(seen) == 201


@pytest.mark.parametrize("n, bs, length", [(10, 20, 1), (20, 20, 1), (99, 20, 4), (100, 20, 5), (0, 5, 1)])
def test_number_of_batches(n, bs, length):
    assert len(SeededBatches(_seed_of, n, bs, 0, "train")) == length


def test_adding_batch_depends_on_its_generator_only():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        x1, y1 = make_adding_batch(_gen(8), 16, 21)
        torch.manual_seed(2)
        torch.rand(7)
        x2, y2 = make_adding_batch(_gen(8), 16, 21)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_adding_datamodule_depends_on_data_seed_only():
    task = Adding(seq_len=21, data_seed=4)
    batches = []
    with torch.random.fork_rng():
        for s in (1, 2):
            torch.manual_seed(s)
            torch.rand(s)
            dm = task.datamodule(6)
            batches.append([next(iter(dm.val_loader())), next(iter(dm.train_dataloader()))])
    for (a, b) in zip(*batches):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # val batch 0 is the adding batch drawn from its split's seed
    x, y = make_adding_batch(_gen(4 * 1_000_003 + 7_919), 6, 21)
    assert torch.equal(batches[0][0][0], x) and torch.equal(batches[0][0][1], y)


def test_loaders_yield_batches_in_index_order():
    sizes = {"train": 200, "val": 120, "test": 80}
    dm = SyntheticDataModule(_seed_of, sizes, 10, 3)
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_loader()),
                          ("test", dm.test_dataloader())):
        got = [int(t[0]) for t in loader]
        base = 3 * 1_000_003 + SPLIT_IDS[split] * 7_919
        assert got == [base + k for k in range(sizes[split] // 10)], split
    # twice the same order (no reshuffle per epoch)
    assert [int(t[0]) for t in dm.train_dataloader()] == [int(t[0]) for t in dm.train_dataloader()]


def test_adding_positional_seq_len_and_minimum():
    assert Adding(37).seq_len == 37
    assert Adding(3).seq_len == 3
    with pytest.raises(ConfigError, match=re.escape("adding: sequence length must be at least 3 "
                                                    "(two markers in two halves), got 2")):
        Adding(seq_len=2)


def test_adding_loss_and_metrics_on_hand_made_tensors():
    task = Adding(seq_len=6)
    out = torch.tensor([[[0.0], [5.0], [9.0], [2.0], [7.0], [1.0]],
                        [[3.0], [1.0], [4.0], [1.0], [5.0], [0.5]]])
    target = torch.tensor([[0.25], [1.5]])
    batch = (torch.zeros(2, 6, 2), target)
    expected = ((1.0 - 0.25) ** 2 + (0.5 - 1.5) ** 2) / 2
    assert task.loss(out, batch).item() == pytest.approx(expected, abs=1e-7)
    metrics = task.metrics(out, batch)
    assert set(metrics) == {"mse"}
    assert metrics["mse"].item() == pytest.approx(expected, abs=1e-7)


def test_copying_metrics_counts_the_last_ten_steps():
    T = 3
    task = Copying(seq_len=T)
    L, B = T + 20, 2
    target = torch.zeros(B, L, dtype=torch.long)
    target[0, -10:] = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 1, 2])
    target[1, -10:] = torch.tensor([8, 7, 6, 5, 4, 3, 2, 1, 8, 7])
    pred = target.clone()
    pred[0, -10:-7] = (target[0, -10:-7] % 8) + 1            # 3 wrong in row 0
    pred[1, -2:] = 0                                         # 2 wrong in row 1
    pred[:, :-10] = 5                                        # earlier steps wrong: not counted
    out = torch.nn.functional.one_hot(pred, 9).float() * 3 - 1
    metrics = task.metrics(out, (None, target))
    assert set(metrics) == {"acc"}
    assert metrics["acc"].item() == pytest.approx((7 + 8) / 20, abs=1e-7)


# --------------------------------------------------------------------------- bench/curves.py

class _Stub:
    def __init__(self, metric="acc", baseline=0.5):
        self.metric, self.baseline = metric, baseline


def _table():
    nan = float("nan")
    train = [(s, 1.0 - 0.06 * i) for i, s in enumerate(range(9, 140, 10))]   # 14 points, steps 9..139
    rows = [{"step": s, "train/loss": v} for s, v in train]
    val = [(49, 0.30, 0.90, 0.20), (99, 0.70, 0.40, 0.15), (139, 0.55, 0.50, 0.10)]
    for s, acc, loss, tracked in val:
        rows.append({"step": s, "val/acc": acc, "val/loss": loss, "tracked_test/acc": tracked})
    rows.append({"step": 60, "diag/unitarity_error": 2e-6})
    rows.append({"step": 120, "diag/unitarity_error": 7e-6})
    rows.append({"step": 130, "diag/unitarity_error": nan})
    df = pd.DataFrame(rows).sort_values("step", kind="stable").reset_index(drop=True)
    return df, train, val


@pytest.mark.parametrize("mode", ["max", "min"])
def test_summarise_every_key(mode):
    df, train, val = _table()
    out = summarise(df, _Stub(), mode)
    losses = [v for _, v in train]
    smooth = [sum(losses[i - 4:i + 1]) / 5 for i in range(4, len(losses))]
    first = next(train[i + 4][0] for i, m in enumerate(smooth) if m < 0.5) + 1
    best = max(val, key=lambda r: r[1]) if mode == "max" else min(val, key=lambda r: r[1])
    tracked = [r[3] for r in val]
    expected = {
        "final_train_loss": sum(losses[-10:]) / 10,
        "train_steps_logged": train[-1][0] + 1,
        "first_step_below_baseline": first,
        "final_val_acc": val[-1][1],
        "best_val_acc": best[1],
        "best_val_step": best[0] + 1,
        "best_test_acc": max(tracked) if mode == "max" else min(tracked),
        "final_val_loss": val[-1][2],
        "best_val_loss": min(r[2] for r in val),
        "max_unitarity_error": 7e-6,
    }
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, rel=1e-12, abs=0), k
        assert type(out[k]) is type(v), k
    assert first == 120          # spelled out: mean of points 7..11 (1 - 0.06*9 = 0.46) < 0.5, at step 119


def test_summarise_edge_cases():
    assert summarise(None, _Stub(), "max") == {}
    df, train, _ = _table()
    out = summarise(df, _Stub(baseline=None), "max")
    assert "first_step_below_baseline" not in out and "final_train_loss" in out
    out = summarise(df, _Stub(baseline=0.01), "max")
    assert out["first_step_below_baseline"] is None
    only_train = df[["step", "train/loss"]].dropna()
    assert set(summarise(only_train, _Stub(), "max")) == {"final_train_loss", "train_steps_logged",
                                                          "first_step_below_baseline"}
    empty_cols = df.assign(**{"val/acc": float("nan"), "val/loss": float("nan"),
                              "tracked_test/acc": float("nan"), "diag/unitarity_error": float("nan")})
    assert set(summarise(empty_cols, _Stub(), "max")) == {"final_train_loss", "train_steps_logged",
                                                          "first_step_below_baseline"}
    no_train_column = df.drop(columns=["train/loss"])          # e.g. a run killed before its first log
    out = summarise(no_train_column, _Stub(), "max")
    assert "final_train_loss" not in out and out["final_val_acc"] == 0.55
    no_train = df.assign(**{"train/loss": float("nan")})
    assert "final_train_loss" not in summarise(no_train, _Stub(), "max")


def _write(path, steps, tag):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"step": steps, "train/loss": [tag * 1000 + s for s in steps]}).to_csv(path, index=False)


def test_read_curves_joins_resumed_parts(tmp_path):
    run = tmp_path / "run"
    _write(run / "csv" / "metrics.csv", list(range(0, 10)), 0)
    _write(run / "csv" / "part1" / "metrics.csv", list(range(6, 15)), 1)
    _write(run / "csv" / "part2" / "metrics.csv", list(range(12, 20)), 2)
    _write(run / "csv" / "part3" / "metrics.csv", [], 3)                   # header only: no rows
    _write(run / "csv" / "part10" / "metrics.csv", list(range(18, 26)), 10)  # numeric order: after part3
    (run / "csv" / "part4").mkdir()
    (run / "csv" / "part4" / "metrics.csv").write_text("")                 # empty file: skipped
    merged, path = read_curves(str(run))
    owner = {s: 0 for s in range(0, 6)} | {s: 1 for s in range(6, 12)} | {s: 2 for s in range(12, 18)} \
        | {s: 10 for s in range(18, 26)}
    assert merged["step"].tolist() == list(range(26))
    assert merged["train/loss"].tolist() == [owner[s] * 1000 + s for s in range(26)]
    # one row label per row (0..n-1): summarise looks rows up by label (idxmax, then .loc)
    assert merged.index.tolist() == list(range(26))
    assert path == run / "csv" / "curves.csv"
    back = pd.read_csv(path)
    assert back["step"].tolist() == list(range(26))
    assert back["train/loss"].tolist() == merged["train/loss"].tolist()
    assert list(back.columns) == ["step", "train/loss"]


def test_read_curves_single_part_and_none(tmp_path):
    run = tmp_path / "run"
    assert read_curves(run) == (None, None)
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text("")
    assert read_curves(run) == (None, None)
    _write(run / "csv" / "metrics.csv", [0, 1, 2], 0)
    df, path = read_curves(run)
    assert path == run / "csv" / "metrics.csv"
    assert df["step"].tolist() == [0, 1, 2]
    assert not (run / "csv" / "curves.csv").exists()


def test_read_curves_only_a_later_part(tmp_path):
    run = tmp_path / "run"
    _write(run / "csv" / "part1" / "metrics.csv", [5, 6], 1)
    df, path = read_curves(run)
    assert path == run / "csv" / "part1" / "metrics.csv"
    assert df["train/loss"].tolist() == [1005, 1006]


# --------------------------------------------------------------------------- bench/reference_optim.py

def _p():
    return [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]


def _msg(name, value, expected):
    return "^" + re.escape(f"optimizer option {name}={value!r} is invalid: expected {expected}") + "$"


RANGE, NONNEG, PLACES = "a number in [0, 1)", "a non-negative number", "inside or outside"
BETAS = "two numbers in [0, 1), e.g. 0.9/0.999"


@pytest.mark.parametrize("cls, kwargs, name, value, expected", [
    (MeanSquareRMSprop, {"decay": 1}, "decay", 1, RANGE),
    (MeanSquareRMSprop, {"decay": 1.5}, "decay", 1.5, RANGE),
    (MeanSquareRMSprop, {"decay": -0.1}, "decay", -0.1, RANGE),
    (MeanSquareRMSprop, {"eps": -1}, "eps", -1, NONNEG),
    (MeanSquareRMSprop, {"eps_placement": "middle"}, "eps_placement", "middle", PLACES),
    (MeanSquareRMSprop, {"initial_accumulator": -0.5}, "initial_accumulator", -0.5, NONNEG),
    (AccumulatorAdagrad, {"eps": -1}, "eps", -1, NONNEG),
    (AccumulatorAdagrad, {"eps_placement": "middle"}, "eps_placement", "middle", PLACES),
    (AccumulatorAdagrad, {"initial_accumulator": -0.5}, "initial_accumulator", -0.5, NONNEG),
    (BiasCorrectedAdam, {"betas": (0.9, 1.0)}, "betas", (0.9, 1.0), BETAS),
    (BiasCorrectedAdam, {"betas": (0.9, 1.5)}, "betas", (0.9, 1.5), BETAS),
    (BiasCorrectedAdam, {"betas": (1.0, 0.999)}, "betas", (1.0, 0.999), BETAS),
    (BiasCorrectedAdam, {"betas": (-0.1, 0.999)}, "betas", (-0.1, 0.999), BETAS),
    (BiasCorrectedAdam, {"betas": (0.9,)}, "betas", (0.9,), BETAS),
    (BiasCorrectedAdam, {"betas": (0.9, 0.99, 0.5)}, "betas", (0.9, 0.99, 0.5), BETAS),
    (BiasCorrectedAdam, {"eps": -1}, "eps", -1, NONNEG),
])
def test_invalid_options_are_named(cls, kwargs, name, value, expected):
    with pytest.raises(ConfigError, match=_msg(name, value, expected)):
        cls(_p(), 0.1, **kwargs)


@pytest.mark.parametrize("cls, kwargs", [
    (MeanSquareRMSprop, {"decay": 0}), (MeanSquareRMSprop, {"decay": 0.999}), (MeanSquareRMSprop, {"eps": 0}),
    (MeanSquareRMSprop, {"initial_accumulator": 0}), (MeanSquareRMSprop, {"eps_placement": "outside"}),
    (AccumulatorAdagrad, {"eps": 0, "initial_accumulator": 1}),
    (AccumulatorAdagrad, {"eps": 1, "initial_accumulator": 0}),
    (AccumulatorAdagrad, {"eps_placement": "inside"}),
    (BiasCorrectedAdam, {"betas": (0, 0)}), (BiasCorrectedAdam, {"betas": (0.999, 0.5)}),
    (BiasCorrectedAdam, {"eps": 0}),
])
def test_boundary_options_are_accepted(cls, kwargs):
    group = cls(_p(), 0.1, **kwargs).param_groups[0]
    for k, v in kwargs.items():
        assert group[k] == (tuple(float(b) for b in v) if k == "betas" else v)


def test_adagrad_eps_and_initial_both_zero_rejected():
    with pytest.raises(ConfigError, match="^" + re.escape(
            "optimizer options eps=0 and initial_accumulator=0 together divide by zero "
            "wherever a gradient entry is 0; give one of them a positive value") + "$"):
        AccumulatorAdagrad(_p(), 0.1, eps=0, initial_accumulator=0)


def test_constructor_defaults():
    def group(opt):
        return {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    assert group(MeanSquareRMSprop(_p(), 0.1)) == {"lr": 0.1, "decay": 0.9, "eps": 1e-10, "eps_placement": "inside",
                                                   "initial_accumulator": 1.0}
    assert group(AccumulatorAdagrad(_p(), 0.1)) == {"lr": 0.1, "eps": 0.0, "eps_placement": "outside",
                                                    "initial_accumulator": 0.1}
    g = group(BiasCorrectedAdam(_p(), 0.1))
    assert g == {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "epsilon_hat": True}
    assert g["epsilon_hat"] is True


@pytest.mark.parametrize("placement", ["inside", "outside"])
def test_adagrad_one_step_with_eps(placement):
    p0 = [0.5, -1.0, 2.0]
    grad = [0.3, -2.0, 0.0]
    lr, eps, init = 0.1, 1e-3, 0.2
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = AccumulatorAdagrad([p], lr, eps=eps, eps_placement=placement, initial_accumulator=init)
    p.grad = torch.tensor(grad, dtype=torch.float64)
    opt.step()
    for got, x, gr in zip(p.detach().tolist(), p0, grad):
        acc = init + gr * gr
        den = math.sqrt(acc + eps) if placement == "inside" else math.sqrt(acc) + eps
        assert got == pytest.approx(x - lr * gr / den, rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("placement", ["inside", "outside"])
def test_rmsprop_one_step_with_eps(placement):
    p0, grad = [0.5, -1.0], [0.3, -2.0]
    lr, eps, init, decay = 0.1, 1e-3, 0.0, 0.8
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = MeanSquareRMSprop([p], lr, decay=decay, eps=eps, eps_placement=placement, initial_accumulator=init)
    p.grad = torch.tensor(grad, dtype=torch.float64)
    opt.step()
    for got, x, gr in zip(p.detach().tolist(), p0, grad):
        ms = decay * init + (1 - decay) * gr * gr
        den = math.sqrt(ms + eps) if placement == "inside" else math.sqrt(ms) + eps
        assert got == pytest.approx(x - lr * gr / den, rel=1e-14, abs=1e-15)
