"""Secrets stay secret: a password in the storage URL and a W&B key in the environment appear in
no file the harness writes, no line it prints and nothing it stores in the study.

The PostgreSQL server of the tests trusts local connections, so it accepts any password in the
URL: the password below is never checked, only followed.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from bench import sweep as S
from bench.errors import ConfigError
from bench.secrets import mask_text, storage_url
from test_sweep import FAST, TINY, space_file
from test_sweep_postgres import PG_URL, pg_url  # noqa: F401  (fixture)

PASSWORD = "Pw-" + uuid.uuid4().hex[:10]
WANDB_KEY = "local-" + uuid.uuid4().hex          # never sent anywhere: W&B runs offline
SPACE = "name: two\ngroups:\n  A: {opt: [rmsprop, adam], lr: [1.0e-3]}\n"


@pytest.mark.parametrize("text,masked", [
    ("postgresql://bob:s3cr%40t@db:5432/optuna", "postgresql://bob:***@db:5432/optuna"),
    ("--storage postgresql+psycopg://bob:p:w@db/x --study s", "--storage postgresql+psycopg://bob:***@db/x --study s"),
    ("postgresql://bob@db/optuna", "postgresql://bob@db/optuna"),
    ("host=db user=bob password=hunter22 dbname=x", "host=db user=bob password=*** dbname=x"),
    ("postgresql:///x?service=lab&sslpassword=abc", "postgresql:///x?service=lab&sslpassword=***"),
    ("runs/sweeps/s.journal", "runs/sweeps/s.journal"),
])
def test_mask_text(text, masked):
    assert mask_text(text) == masked


def test_secret_environment_values_are_masked(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    assert mask_text(f"bench run --note {WANDB_KEY}") == "bench run --note ***"


def test_storage_url_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_STORAGE", raising=False)
    assert storage_url(None) is None
    monkeypatch.setenv("BENCH_STORAGE", "postgresql://a@h/d")
    assert storage_url(None) == "postgresql://a@h/d"
    assert storage_url("postgresql://b@h/d") == "postgresql://b@h/d"          # the flag wins
    f = tmp_path / "url"
    f.write_text("postgresql://c:pw@h/d\n# comment\n")
    assert storage_url(None, str(f)) == "postgresql://c:pw@h/d"
    with pytest.raises(ConfigError, match="not both"):
        storage_url("x", str(f))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        storage_url(None, str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="cannot read --storage-file"):
        storage_url(None, str(tmp_path / "missing"))


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def _everything_written(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def _assert_nowhere(secret: str, roots, texts, pg_url: str) -> None:  # noqa: F811
    """Not in any file under ``roots``, any of ``texts``, or any row of any table of the database."""
    import sqlalchemy

    leaked = [str(p) for p in _everything_written(*roots) if secret.encode() in p.read_bytes()]
    assert not leaked, f"secret written to {leaked}"
    for text in texts:
        assert secret not in text
    engine = sqlalchemy.create_engine(S.parse_storage(pg_url, "runs", "x").url)
    with engine.connect() as conn:
        for table in sqlalchemy.inspect(conn).get_table_names():
            rows = conn.execute(sqlalchemy.text(f'SELECT t::text FROM "{table}" t')).scalars().all()
            assert not [r for r in rows if secret in r], f"secret stored in table {table}"
    engine.dispose()


@pytest.fixture
def pg_study(pg_url):  # noqa: F811
    name = f"bench-secret-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=S.open_storage(S.parse_storage(pg_url, "runs", name)))


@pytest.mark.postgres
def test_sweep_with_a_password_in_the_url_leaks_it_nowhere(tmp_path, pg_url, pg_study):  # noqa: F811
    space = space_file(tmp_path, SPACE)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}     # not this process's wandb service
    env.update({"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"),
                "WANDB_SILENT": "true", "WANDB_API_KEY": WANDB_KEY})
    (tmp_path / "wandb").mkdir()
    url = _with_password(pg_url)
    tiny = [a for a in TINY if a not in ("--wandb", "disabled")]
    argv = [sys.executable, "-m", "bench.cli", "sweep", *tiny, *FAST, "--wandb", "offline", "--runs-dir", "runs",
            "--space", space, "--study", pg_study, "--storage", url, "--no-prune", "--workers", "2"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"bench sweep best --study {pg_study} --storage 'postgresql://postgres:***@" in done.stdout
    outputs = [done.stdout, done.stderr]
    # status and best through $BENCH_STORAGE: nothing on the command line at all
    for action in ("status", "best"):
        shown = subprocess.run([sys.executable, "-m", "bench.cli", "sweep", action, "--study", pg_study],
                               cwd=tmp_path, env={**env, "BENCH_STORAGE": url}, capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    study = optuna.load_study(study_name=pg_study, storage=S.open_storage(S.parse_storage(pg_url, "runs", pg_study)))
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2
    results = list((tmp_path / "runs").rglob("result.json"))
    assert len(results) == 2 and "***" in json.loads(results[0].read_text())["command"]
    assert len(list(tmp_path.rglob("*.wandb"))) == 2, "W&B wrote its offline runs (in each run folder)"
    for secret in (PASSWORD, WANDB_KEY):
        _assert_nowhere(secret, [tmp_path], outputs, pg_url)


@pytest.mark.postgres
def test_array_workers_get_the_url_through_the_environment(tmp_path, pg_url, pg_study, monkeypatch):  # noqa: F811
    """submitit job scripts, pickles and logs hold no password; the workers still connect."""
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("BENCH_STORAGE", raising=False)
    (tmp_path / "s.yaml").write_text(SPACE)
    url = _with_password(pg_url)
    code = main(["sweep", *TINY, *FAST, "--space", "s.yaml", "--runs-dir", "runs", "--study", pg_study,
                 "--storage", url, "--launcher", "submitit-local", "--workers", "2", "--wait", "--no-prune"])
    assert code == 0
    slurm = tmp_path / "runs" / "slurm" / pg_study
    assert list(slurm.rglob("*.pkl")) or list(slurm.rglob("*.sh"))
    study = optuna.load_study(study_name=pg_study, storage=S.open_storage(S.parse_storage(pg_url, "runs", pg_study)))
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2
    _assert_nowhere(PASSWORD, [tmp_path], [], pg_url)


def test_storage_file_is_read_and_never_echoed(tmp_path, capsys):
    from bench.cli import main

    secret_url = tmp_path / "storage-url"
    secret_url.write_text(f"postgresql://nobody:{PASSWORD}@127.0.0.1:1/none\n")
    code = main(["sweep", "status", "--study", "x", "--storage-file", str(secret_url)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open storage postgresql+psycopg" in err and "nobody:***@" in err
    assert PASSWORD not in err
