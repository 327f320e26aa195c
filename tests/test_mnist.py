"""MNIST and permuted MNIST: the IDX reader, file discovery, errors, the real split, and runs."""
from __future__ import annotations

import gzip
import shutil
import time

import numpy as np
import pytest
import torch

from bench.errors import ConfigError, DataError
from bench.tasks import build_task
from bench.tasks.idx import parse_idx, read_idx, write_idx
from bench.tasks.mnist import MNIST_FILES, find_mnist_files, load_mnist, name_variants, search_dirs

realdata = pytest.mark.realdata


# ---- IDX reader on small synthetic files --------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"], ids=["raw", "gz"])
def test_idx_roundtrip_raw_and_gz(tmp_path, suffix):
    images = np.random.RandomState(0).randint(0, 256, (7, 28, 28)).astype(np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    p_img = write_idx(tmp_path / f"imgs{suffix}", images)
    p_lab = write_idx(tmp_path / f"labs{suffix}", labels)
    assert (p_img.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert np.array_equal(read_idx(p_img, ndim=3, shape=(None, 28, 28)), images)
    assert np.array_equal(read_idx(p_lab, ndim=1), labels)


def test_idx_bad_magic_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((3, 28, 28), np.uint8))  # images inside
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: bad magic number 0x00000803, expected 0x00000801"):
        read_idx(path, ndim=1)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_idx_truncated_names_the_file(tmp_path, compress):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.ones((5, 28, 28), np.uint8), compress=compress)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: .*(truncated|corrupt)"):
        read_idx(path, ndim=3)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: 2 bytes is too short"):
        read_idx(path, ndim=3)


def test_idx_wrong_count_and_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(100, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: wrong count: shape \(100,\), expected \(60000,\)"):
        read_idx(path, ndim=1, shape=(60000,))
    data = path.read_bytes() + b"\x00"
    with pytest.raises(DataError, match="1 unexpected bytes"):
        parse_idx(data, path, ndim=1)


@pytest.mark.parametrize("layout", [".", "raw", "MNIST/raw"])
@pytest.mark.parametrize("style", [0, 1, 2, 3], ids=["lecun", "lecun.gz", "dotted", "dotted.gz"])
def test_find_files_in_every_layout_and_naming_style(tmp_path, layout, style):
    folder = tmp_path if layout == "." else tmp_path / layout
    folder.mkdir(parents=True, exist_ok=True)
    for stem in MNIST_FILES:
        (folder / name_variants(stem)[style]).write_bytes(b"")
    found, missing = find_mnist_files(search_dirs(tmp_path))
    assert not missing
    assert {s: p.name for s, p in found.items()} == {s: name_variants(s)[style] for s in MNIST_FILES}


def test_missing_files_fail_at_once_offline(tmp_path, data_cache):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")      # one of four present
    started = time.time()
    with pytest.raises(DataError) as err:
        build_task("mnist", data_dir=str(tmp_path)).datamodule(50)
    assert time.time() - started < 5
    msg = str(err.value)
    for stem in ("train-labels", "t10k-images", "t10k-labels"):
        assert f"{stem}-idx" in msg
    assert "--data-dir" in msg and str(tmp_path) in msg and "BENCH_OFFLINE" in msg
    with pytest.raises(DataError, match="is not a folder"):
        build_task("mnist", data_dir=str(tmp_path / "nope")).datamodule(50)


@realdata
def test_download_into_the_cache_verifies_checksums(mnist_dir, tmp_path, data_cache, monkeypatch):
    """A local HTTP mirror stands in for the network: missing files are fetched and checked."""
    import functools
    import http.server
    import threading

    from bench.tasks import mnist

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for stem in MNIST_FILES:
        shutil.copy(mnist_dir / f"{stem}-idx{MNIST_FILES[stem][0]}-ubyte.gz", mirror)
    good = (mirror / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(good)[:-1] + b"\x00"))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(mirror)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(mnist, "MIRRORS", (f"http://127.0.0.1:{server.server_address[1]}/",))
        monkeypatch.delenv("BENCH_OFFLINE")
        with pytest.raises(DataError, match=r"could not download t10k-labels-idx1-ubyte\.gz: .*MD5"):
            build_task("mnist").datamodule(50)
        assert not (data_cache / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
        assert not list((data_cache / "mnist").glob(".tmp-*"))
        (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(good)
        task = build_task("mnist")
        dm = task.datamodule(50)                 # downloads only the file still missing
    finally:
        server.shutdown()
    assert len(dm.splits["test"]) == 10_000
    assert sorted(p.name for p in (data_cache / "mnist").iterdir()) == sorted(
        f"{s}-idx{MNIST_FILES[s][0]}-ubyte.gz" for s in MNIST_FILES)
    assert all(f.startswith(str(data_cache)) for f in task.info()["files"].values())


def test_seq_len_is_not_a_knob():
    with pytest.raises(ConfigError, match="fixed at 784"):
        build_task("mnist", seq_len=100)
    assert build_task("pmnist", seq_len=784).seq_len == 784


# ---- the real files -------------------------------------------------------------------------

@realdata
def test_real_mnist_split_shapes_and_labels(mnist_dir, data_cache):
    task = build_task("mnist", data_dir=str(mnist_dir))
    dm = task.datamodule(50)
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 784, 1) and y.shape == (50,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    # the reference split: validation = official training images 0-4999, train = 5000-59999
    assert dm.splits["val"].labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert dm.splits["test"].labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(dm.splits["train"].labels.numpy()).tolist() == [
        5444, 6179, 5470, 5638, 5307, 4987, 5417, 5715, 5389, 5454]
    assert np.bincount(dm.splits["val"].labels.numpy()).tolist() == [
        479, 563, 488, 493, 535, 434, 501, 550, 462, 495]
    assert np.bincount(dm.splits["test"].labels.numpy()).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    pixels = dm.splits["train"].images.float() / 255
    assert pixels.mean().item() == pytest.approx(0.1307, abs=2e-3)
    assert set(task.info()["files"]) == set(MNIST_FILES) and task.info()["md5_verified"]


@realdata
def test_real_permutation_is_fixed(mnist_dir, data_cache):
    plain = build_task("mnist", data_dir=str(mnist_dir)).datamodule(50)
    task = build_task("pmnist", data_dir=str(mnist_dir))
    perm_dm = task.datamodule(50)
    perm = np.array(task.info()["permutation"])
    assert np.array_equal(np.sort(perm), np.arange(784)) and not np.array_equal(perm, np.arange(784))
    assert np.array_equal(perm, np.random.RandomState(92916).permutation(784))
    assert perm[:8].tolist() == [319, 576, 323, 107, 355, 716, 197, 20]      # pinned: the same every run
    assert task.info()["permutation_seed"] == 92916
    # x_perm[:, t] = x[:, perm[t]] on the time axis, labels unchanged
    xp, yp = perm_dm.splits["test"][0]
    x, y = plain.splits["test"][0]
    assert yp == y and np.array_equal(xp.numpy()[:, 0], x.numpy()[perm, 0])
    assert build_task("pmnist", data_dir=str(mnist_dir)).info()["permutation"] == perm.tolist()


@realdata
def test_real_files_in_other_layouts_names_and_compression(mnist_dir, tmp_path, data_cache):
    ref, _ = load_mnist(mnist_dir)
    raw = tmp_path / "MNIST" / "raw"                        # torchvision's layout, dotted names
    raw.mkdir(parents=True)
    for stem in MNIST_FILES:
        src = mnist_dir / f"{stem}-idx{MNIST_FILES[stem][0]}-ubyte.gz"
        if stem.endswith("labels"):                         # labels uncompressed, images gz
            (raw / name_variants(stem)[2]).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            (raw / name_variants(stem)[3]).symlink_to(src)
    arrays, files = load_mnist(tmp_path)
    assert files["train-labels"].endswith("MNIST/raw/train-labels.idx1-ubyte")
    assert all(np.array_equal(arrays[s], ref[s]) for s in MNIST_FILES)


@realdata
def test_real_corrupt_and_mislabelled_files(mnist_dir, tmp_path, data_cache):
    for stem in MNIST_FILES:
        shutil.copy(mnist_dir / f"{stem}-idx{MNIST_FILES[stem][0]}-ubyte.gz", tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    data = bytearray(gzip.decompress(good))
    data[100] = (data[100] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: checksum mismatch"):
        load_mnist(tmp_path)
    # the test labels under the training name: a wrong count, named
    shutil.copy(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    wrong = r"train-labels-idx1-ubyte\.gz: wrong count: shape \(10000,\), expected \(60000,\)"
    with pytest.raises(DataError, match=wrong):
        load_mnist(tmp_path)
    labels.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: corrupt or truncated gzip"):
        load_mnist(tmp_path)


@realdata
def test_real_mnist_smoke_run(mnist_dir, tmp_path, data_cache, one_thread, monkeypatch):
    """A few steps of a tiny model through the one run function, on the real split."""
    from bench.config import RunConfig
    from bench.run import run
    from bench.tasks.mnist import MNIST

    monkeypatch.setattr(MNIST, "eval_batch_size", 2500)   # fewer, larger no-grad batches: faster here

    result = run(RunConfig(model="scurnn", task="pmnist", n_hidden=8, batch_size=16, max_steps=3, val_every=3,
                           data_dir=str(mnist_dir), wandb="disabled", runs_dir=str(tmp_path), quiet=True,
                           track_test=True))
    assert result["status"] == "completed" and result["global_step"] == 3
    # the test split tracked at the only validation (step 3) is the final weights' test accuracy
    assert result["metrics"]["best_test_acc"] == pytest.approx(result["metrics"]["test_acc"])
    assert 0.0 <= result["metrics"]["test_acc"] <= 1.0 and "best_val_acc" in result["metrics"]
    assert result["task_info"]["permutation"][:3] == [319, 576, 323]
    assert result["task_info"]["split"] == {"train": 55_000, "val": 5_000, "test": 10_000}


@realdata
@pytest.mark.slow
def test_real_mnist_scurnn_learns(mnist_dir, tmp_path, data_cache, one_thread):
    """scuRNN n=64, 300 steps of 50 (the paper's optimizers): test accuracy clearly above chance."""
    from bench.config import RunConfig
    from bench.run import run

    result = run(RunConfig(model="scurnn", task="mnist", n_hidden=64, batch_size=50, max_steps=300, val_every=300,
                           data_dir=str(mnist_dir), wandb="disabled", runs_dir=str(tmp_path), quiet=True))
    assert result["status"] == "completed"
    print(f"scuRNN n=64, 300 steps: test_acc {result['metrics']['test_acc']:.3f}, "
          f"{result['wall_time_s']:.0f} s")
    assert result["metrics"]["test_acc"] > 0.3, result["metrics"]    # chance is 0.1; 0.62 measured
