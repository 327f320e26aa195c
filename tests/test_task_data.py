"""The data the tasks feed the models, checked against the protocols of the reference code
(scoRNN/scuRNN *_copying.py and *_adding.py, TF's MNIST reader) and the paper §5.

Every check here is an independent oracle written from the protocol, not a re-run of the
task's own code:

* copying (scuRNN_copying.py): batches from the task's own datamodule (train, val and test loaders,
  several sequence lengths and data seeds) equal, element by element, the sequence the protocol
  builds from the batch's 10 data symbols: the symbols, T - 1 blanks, the marker 9 at 0-based
  index T + 9, 10 blanks; the target T + 10 blanks then the symbols. One-hot layout, dtypes,
  uniform symbols from {1..8}, and the baseline 10 ln 8 / (T + 20) as numbers (0.17329 at
  T = 100, ...) and as the cross-entropy of the memoryless strategy through the task's loss.
* adding (scuRNN_adding.py): exactly two markers, the first in [0, f-1] and the second in [f, T-1]
  with f = floor((T-1)/2) (the ends of both ranges are hit, so a range shifted by one fails),
  markers uniform over their ranges (chi-square), values U(0, 1), target the sum of the marked
  values, baseline 1/6 as a number and as the MSE of predicting 1.
* MNIST / pMNIST (TF's read_data_sets split, real IDX files in BENCH_DATA_DIR): split rows, pixels /255,
  labels, and the 92916 permutation applied as x_perm[:, t] = x[:, perm[t]].
* "first step below baseline" (bench/curves.py ``summarise``) on constructed curves: the
  5-point rolling mean of the logged training losses, strictly below the baseline, reported as
  the 1-based step (logged 0-based step + 1).
"""
from __future__ import annotations

import gzip
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.curves import summarise
from bench.tasks import build_task

realdata = pytest.mark.realdata

N_COPY, BLANK, MARKER = 10, 0, 9


def _batches(loader, n):
    out = []
    for i, batch in enumerate(loader):
        if i == n:
            break
        out.append(batch)
    return out


def _loaders(dm):
    return {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}


def _chi2_ok(counts: np.ndarray) -> tuple[bool, float, int]:
    """Uniformity of ``counts`` by Pearson's chi-square against a generous fixed bound,
    df + 6 sqrt(2 df): p about 1e-4 at df = 7 and smaller for the larger df used here; the data
    are seeded, so the test is deterministic."""
    expected = counts.sum() / len(counts)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = len(counts) - 1
    return chi2 < df + 6 * math.sqrt(2 * df), chi2, df


# ---- copying --------------------------------------------------------------------------------

def _copying_protocol(data: torch.Tensor, T: int):
    """The input symbols and targets the copying code prescribes for the 10 data symbols ``data``."""
    B = data.shape[0]
    seq = np.zeros((B, T + 20), dtype=np.int64)
    target = np.zeros((B, T + 20), dtype=np.int64)
    for b in range(B):
        row = list(data[b].tolist()) + [BLANK] * (T - 1) + [MARKER] + [BLANK] * 10
        seq[b] = row
        target[b] = [BLANK] * (T + 10) + list(data[b].tolist())
    # the marker is at 0-based index T + 9 = 10 + (T - 1): after the 10 symbols and T - 1 blanks
    assert (seq[:, T + 9] == MARKER).all() and (seq[:, : T + 9] != MARKER).all()
    return seq, target


@pytest.mark.parametrize("T", [1, 2, 5, 100, 1000])
@pytest.mark.parametrize("data_seed", [5544, 0, 12345])
def test_copying_batches_follow_the_protocol(T, data_seed):
    task = build_task("copying", seq_len=T, data_seed=data_seed)
    assert (task.d_input, task.d_output) == (10, 9)
    dm = task.datamodule(6)
    for split, loader in _loaders(dm).items():
        for x, y in _batches(loader, 3):
            assert x.shape == (6, T + 20, 10) and x.dtype == torch.float32, split
            assert y.shape == (6, T + 20) and y.dtype == torch.int64, split
            # one-hot over the 10 input symbols: exactly one 1 per step, all else 0
            assert ((x == 0) | (x == 1)).all() and (x.sum(-1) == 1).all()
            symbols = x.argmax(-1)
            data = symbols[:, :N_COPY]
            assert ((data >= 1) & (data <= 8)).all(), f"{split}: data symbols outside 1..8"
            want_seq, want_target = _copying_protocol(data, T)
            assert np.array_equal(symbols.numpy(), want_seq), f"{split}: input differs from the protocol (T={T})"
            assert np.array_equal(y.numpy(), want_target), f"{split}: target differs from the protocol (T={T})"
            assert y.max() <= 8                                   # 9 output classes, 0..8


def test_copying_marker_position_spelled_out():
    """T = 3: symbols at 0..9, blanks at 10, 11, the marker at 12 (= T + 9), blanks 13..22."""
    x, y = next(iter(build_task("copying", seq_len=3).datamodule(2).val_dataloader()))
    s = x.argmax(-1)
    assert s.shape[1] == 23
    assert (s[:, 12] == 9).all()
    assert (s[:, 10:12] == 0).all() and (s[:, 13:] == 0).all()
    assert (y[:, :13] == 0).all() and torch.equal(y[:, 13:], s[:, :10])


def test_copying_seeds_and_splits_differ_and_repeat():
    def first(seed, split):
        dm = build_task("copying", seq_len=20, data_seed=seed).datamodule(20)
        return next(iter(_loaders(dm)[split]))[0]

    a = first(1, "train")
    assert torch.equal(a, first(1, "train")), "the same data seed must give the same batch"
    assert not torch.equal(a, first(2, "train")), "another data seed must give other data"
    assert not torch.equal(a, first(1, "val")) and not torch.equal(first(1, "val"), first(1, "test"))


def test_copying_symbols_are_uniform_on_1_to_8():
    dm = build_task("copying", seq_len=1).datamodule(100)
    data = torch.cat([x.argmax(-1)[:, :N_COPY].reshape(-1) for x, _ in _batches(dm.train_dataloader(), 40)])
    counts = np.bincount(data.numpy(), minlength=10)
    assert counts[0] == 0 and counts[9] == 0
    ok, chi2, df = _chi2_ok(counts[1:9])
    assert ok, f"data symbols not uniform on 1..8: chi2 {chi2:.1f} with {df} df ({counts[1:9].tolist()})"


@pytest.mark.parametrize("T, number", [(100, 0.17329), (1000, 0.020387), (2000, 0.010294)])
def test_copying_baseline_as_a_number(T, number):
    baseline = build_task("copying", seq_len=T).baseline
    assert baseline == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-12)
    assert baseline == pytest.approx(number, abs=5e-6)        # 10·ln 8/(T + 20) worked out


@pytest.mark.parametrize("T", [1, 10, 100])
def test_copying_baseline_is_the_memoryless_cross_entropy(T):
    """Blank with certainty for T + 10 steps, then uniform over 1..8: the task's own loss on a
    real batch is 10 ln 8 / (T + 20) = its ``baseline``."""
    task = build_task("copying", seq_len=T)
    batch = next(iter(task.datamodule(5).val_dataloader()))
    out = torch.full((5, T + 20, 9), -1e4, dtype=torch.float64)
    out[:, : T + 10, 0] = 0.0
    out[:, T + 10:, 1:] = 0.0
    assert task.loss(out, batch).item() == pytest.approx(task.baseline, rel=1e-12)


# ---- adding ---------------------------------------------------------------------------------

def _adding_markers(x: torch.Tensor):
    """(first, second) marker positions per row, after checking there are exactly two."""
    marks = x[..., 1]
    assert ((marks == 0) | (marks == 1)).all()
    assert (marks.sum(1) == 2).all(), "every sequence needs exactly two markers"
    pos = marks.nonzero()[:, 1].reshape(-1, 2)          # row-major: sorted within each row
    return pos[:, 0], pos[:, 1]


@pytest.mark.parametrize("T", [3, 4, 10, 11, 200, 201, 750])
@pytest.mark.parametrize("data_seed", [5544, 7])
def test_adding_batches_follow_the_protocol(T, data_seed):
    task = build_task("adding", seq_len=T, data_seed=data_seed)
    assert (task.d_input, task.d_output) == (2, 1)
    f = (T - 1) // 2
    dm = task.datamodule(8)
    for split, loader in _loaders(dm).items():
        for x, y in _batches(loader, 3):
            assert x.shape == (8, T, 2) and x.dtype == torch.float32, split
            assert y.shape == (8, 1) and y.dtype == torch.float32, split
            values = x[..., 0]
            assert ((values >= 0) & (values < 1)).all()
            first, second = _adding_markers(x)
            assert (first <= f - 1).all() and (first >= 0).all(), f"{split}: first marker outside [0, {f - 1}]"
            assert (second >= f).all() and (second <= T - 1).all(), f"{split}: second marker outside [{f}, {T - 1}]"
            rows = torch.arange(8)
            want = values[rows, first].double() + values[rows, second].double()
            assert torch.allclose(y[:, 0].double(), want, rtol=0, atol=1e-6), f"{split}: target is not the marked sum"


@pytest.mark.parametrize("T, first_range, second_range",
                         [(200, (0, 98), (99, 199)), (750, (0, 373), (374, 749)), (10, (0, 3), (4, 9)),
                          (11, (0, 4), (5, 10)), (3, (0, 0), (1, 2))])
def test_adding_marker_ranges_and_uniformity(T, first_range, second_range):
    """the adding code's randint calls give the ranges for L = 200 and 750: [0, 98] / [99, 199] and
    [0, 373] / [374, 749]. Over many sequences both ends of both ranges are hit (so a range
    moved or widened by one step fails), and each position is hit about equally often."""
    dm = build_task("adding", seq_len=T, data_seed=11).datamodule(100)
    n_batches = 200 if T <= 200 else 120
    firsts, seconds, values = [], [], []
    for x, _ in _batches(dm.train_dataloader(), n_batches):
        a, b = _adding_markers(x)
        firsts.append(a)
        seconds.append(b)
        values.append(x[:4, :, 0].reshape(-1))
    first, second = torch.cat(firsts).numpy(), torch.cat(seconds).numpy()
    assert (first.min(), first.max()) == first_range
    assert (second.min(), second.max()) == second_range
    for name, pos, (lo, hi) in (("first", first, first_range), ("second", second, second_range)):
        if hi > lo:
            ok, chi2, df = _chi2_ok(np.bincount(pos - lo, minlength=hi - lo + 1))
            assert ok, f"{name} marker not uniform on [{lo}, {hi}]: chi2 {chi2:.1f} with {df} df"
    v = torch.cat(values).double()
    n = v.numel()
    assert abs(v.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(v.var().item() - 1 / 12) < 0.01
    ok, chi2, df = _chi2_ok(np.histogram(v.numpy(), bins=10, range=(0, 1))[0])
    assert ok, f"values not U(0, 1): chi2 {chi2:.1f} with {df} df"


def test_adding_baseline_is_one_sixth():
    task = build_task("adding", seq_len=50)
    assert abs(task.baseline - 1 / 6) < 1e-12
    assert round(task.baseline, 3) == 0.167
    # and it is the MSE of the constant prediction 1 through the task's own loss: Var(U1 + U2)
    dm = task.datamodule(100)
    losses = []
    for x, y in _batches(dm.train_dataloader(), 200):
        out = torch.ones(x.shape[0], x.shape[1], 1)
        losses.append(task.loss(out, (x, y)).item())
    # 20,000 sequences: the standard error of the mean of (S - 1)^2 is about 0.0014
    assert np.mean(losses) == pytest.approx(1 / 6, abs=0.006)


# ---- MNIST / pMNIST ---------------------------------------------------------------------------

def _read_raw_idx(path, ndim):
    """An independent IDX reader: big-endian magic 0x0000080D, dims as big-endian uint32, bytes."""
    with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as fh:
        data = fh.read()
    assert int.from_bytes(data[:4], "big") == 0x800 | ndim
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def raw_mnist(mnist_dir):
    found = {}
    for stem, nd in (("train-images", 3), ("train-labels", 1), ("t10k-images", 3), ("t10k-labels", 1)):
        hits = sorted(mnist_dir.glob(f"{stem}*idx{nd}-ubyte*"))
        assert hits, f"{stem} not in {mnist_dir}"
        found[stem] = _read_raw_idx(hits[0], nd)
    assert found["train-images"].shape == (60000, 28, 28) and found["t10k-images"].shape == (10000, 28, 28)
    return found


def _scaled(raw: np.ndarray) -> torch.Tensor:
    """Pixels as the harness declares them: uint8 / 255 in float32, row-major, one per step."""
    return torch.from_numpy(raw.reshape(len(raw), 784).astype(np.float32) / np.float32(255)).unsqueeze(-1)


@realdata
@pytest.mark.parametrize("name", ["mnist", "pmnist"])
def test_mnist_batches_are_the_idx_pixels(name, raw_mnist, mnist_dir, data_cache):
    task = build_task(name, data_dir=str(mnist_dir))
    perm = None
    if name == "pmnist":
        perm = np.random.RandomState(92916).permutation(784)            # the harness's fixed pMNIST seed
        assert np.array_equal(np.sort(perm), np.arange(784)) and not np.array_equal(perm, np.arange(784))
    dm = task.datamodule(50)

    def expect(raw_images):
        x = _scaled(raw_images)
        return x if perm is None else x[:, torch.from_numpy(perm)]      # x_perm[:, t] = x[:, perm[t]]

    train_x, train_y = raw_mnist["train-images"], raw_mnist["train-labels"]
    test_x, test_y = raw_mnist["t10k-images"], raw_mnist["t10k-labels"]
    # validation = official training rows 0..4999, in order
    x, y = next(iter(dm.val_dataloader()))
    n = len(y)
    assert x.shape == (n, 784, 1) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, expect(train_x[:n])) and torch.equal(y, torch.from_numpy(train_y[:n].astype(np.int64)))
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    # test = the official 10,000, in order
    x, y = next(iter(dm.test_dataloader()))
    n = len(y)
    assert torch.equal(x, expect(test_x[:n])) and torch.equal(y, torch.from_numpy(test_y[:n].astype(np.int64)))
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # train = official rows 5000..59999; split sizes
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [55_000, 5_000, 10_000]
    for i in (0, 1, 12_345, 54_999):
        xi, yi = dm.splits["train"][i]
        assert torch.equal(xi, expect(train_x[5000 + i: 5001 + i])[0]) and int(yi) == int(train_y[5000 + i])
    # a shuffled training batch: every row is a training image (row >= 5000) with its own label
    lookup: dict[bytes, set] = {}
    for i in range(5000, 60000):
        lookup.setdefault(train_x[i].tobytes(), set()).add(int(train_y[i]))
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (50, 784, 1)
    for row, label in zip(xb, yb):
        pixels = row[:, 0]
        if perm is not None:
            unperm = torch.empty_like(pixels)
            unperm[torch.from_numpy(perm)] = pixels
            pixels = unperm
        raw = torch.round(pixels * 255).to(torch.uint8).numpy().reshape(28, 28)
        assert torch.equal(pixels, _scaled(raw[None])[0, :, 0]), "pixels are not uint8 / 255"
        assert int(label) in lookup.get(raw.tobytes(), set()), "training row not an official training image 5000+"
    assert xb.min() >= 0 and xb.max() <= 1


@realdata
def test_pmnist_permutation_is_fixed(mnist_dir, data_cache):
    want = np.random.RandomState(92916).permutation(784)
    perms = [build_task("pmnist", data_dir=str(mnist_dir), data_seed=s).permutation() for s in (5544, 1, 2)]
    for p in perms:
        assert np.array_equal(p, want), "the permutation must be seed 92916's, whatever the data seed"
    assert len(set(want.tolist())) == 784 and want.min() == 0 and want.max() == 783   # a bijection
    assert build_task("mnist", data_dir=str(mnist_dir)).permutation() is None
    info = build_task("pmnist", data_dir=str(mnist_dir)).info()
    assert info["permutation"] == want.tolist() and info["permutation_seed"] == 92916
    # the same permutation in two datamodules: pMNIST val row i at t is MNIST val row i at perm[t]
    a = build_task("pmnist", data_dir=str(mnist_dir)).datamodule(50).splits["val"]
    b = build_task("mnist", data_dir=str(mnist_dir)).datamodule(50).splits["val"]
    for i in (0, 4999):
        assert torch.equal(a[i][0][:, 0], b[i][0][torch.from_numpy(want), 0])


# ---- first step below baseline (bench/curves.py summarise) ---------------------------------

def _curve(losses, *, every=10, with_val=True) -> pd.DataFrame:
    """A run's metrics.csv as the CSV logger writes it: training rows at 0-based steps 9, 19, ...
    (log_every_n_steps = 10), interleaved with validation rows where train/loss is empty."""
    rows = [{"step": every * (i + 1) - 1, "epoch": 0, "train/loss": float(v), "val/loss": np.nan}
            for i, v in enumerate(losses)]
    if with_val:
        rows += [{"step": every * (i + 1) - 1, "epoch": 0, "train/loss": np.nan, "val/loss": 0.0}
                 for i in range(4, len(losses), 5)]
    return pd.DataFrame(rows).sort_values("step", kind="stable").reset_index(drop=True)


def _first(task, losses, **kw):
    out = summarise(_curve(losses, **kw), task, task.metric_mode)
    assert "first_step_below_baseline" in out
    return out["first_step_below_baseline"]


class _Task:
    """A task stub with a baseline exactly representable in binary (so a curve can equal it)."""
    metric, metric_mode, baseline = "loss", "min", 0.25


@pytest.fixture(params=["copying", "adding", "stub"])
def task(request):
    return _Task() if request.param == "stub" else build_task(request.param, seq_len=100)


def test_first_below_constant_curve_below(task):
    """Below from the first logged point: the 5-point mean exists from the 5th point (step 49
    0-based), reported 1-based: 50."""
    assert _first(task, [0.5 * task.baseline] * 30) == 50


def test_first_below_never(task):
    assert _first(task, [2.0 * task.baseline] * 30) is None
    assert _first(task, [task.baseline * (1 + 1e-9)] * 30) is None


def test_first_below_step_drop(task):
    """2b for 20 points, then 0: at point r >= 20 the window holds r - 19 zeros, and its mean
    2b (24 - r) / 5 is below b from r = 22 on: 0-based step 229, reported 230."""
    b = task.baseline
    assert _first(task, [2 * b] * 20 + [0.0] * 20) == 230


@pytest.mark.parametrize("k", [5, 13, 40])
def test_first_below_at_step_k(task, k):
    """A curve whose 5-point mean crosses at point k: far above before, far below from k - 4 on
    (so all of window k is low and window k - 1 holds one high point of 100 b)."""
    b = task.baseline
    losses = [100 * b] * (k - 4) + [0.0] * 30
    assert _first(task, losses) == 10 * (k + 1)


def test_first_below_one_lucky_batch_is_not_enough(task):
    """One logged batch far below inside a curve at 2b: the 5-point mean stays at 1.6 b."""
    b = task.baseline
    assert _first(task, [2 * b] * 10 + [0.0] + [2 * b] * 10) is None


def test_first_below_window_is_exactly_five_points():
    """Losses 0.375 = 1.5 b with two zeros 4 points apart (b = 0.25, exact binary arithmetic):
    only a window of exactly 5 points holds both zeros with a mean below b (0.225); windows of
    3 or 6 points reach b exactly (not below), 4 or 7+ stay above. So 5 points -> point 14 ->
    reported step 150; any other window -> never."""
    t = _Task()
    losses = [0.375] * 10 + [0.0] + [0.375] * 3 + [0.0] + [0.375] * 10
    assert _first(t, losses) == 150


def test_first_below_touching_is_not_below():
    """A 5-point mean equal to the baseline is not below it (strictly less than); one ulp-scale
    step under it is. 0.25 and 0.25 - 2^-10 are exact in binary, so the means are exact."""
    t = _Task()
    assert _first(t, [0.25] * 30) is None
    # from point 10 on each window holds at least one point just below: mean 0.25 - 2^-10/5
    assert _first(t, [0.25] * 10 + [0.25 - 2 ** -10] * 10) == 110


def test_first_below_ignores_validation_rows():
    """Validation rows (NaN train/loss) are not logged training points: the window counts
    training points only, and a very low val/loss changes nothing."""
    t = _Task()
    assert _first(t, [0.1] * 12, with_val=True) == _first(t, [0.1] * 12, with_val=False) == 50
