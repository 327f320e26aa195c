"""What can be checked of docker/ without a Docker engine: pins, the compose file's shape and
secrets, the build context, and the per-worker GPU claim script (run here with a fake nvidia-smi).

The static checks are functions that return a list of problems; each is also run on a copy of
the real file with one fault injected, so that a check that can never fail is caught too.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE_TEXT = (DOCKER / "compose.yaml").read_text()
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
GPU_WORKER = DOCKER / "gpu-worker.sh"
ENV_EXAMPLE = DOCKER / "env.example"
DB = "postgres"                     # the database service
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|API_KEY", re.I)
# ${VAR}, ${VAR:?message}, ${VAR?message}, ${VAR:-} (empty default): no value written in the file
SECRET_FROM_ENV = re.compile(r"^\$\{[A-Za-z_]\w*(?:(?::?\?[^}]*)|:?-)?\}$")
URL_PASSWORD = re.compile(r"[A-Za-z][\w+.-]*://[^\s/@:]+:[^\s/@]+@")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_TEXT)


# --------------------------------------------------------------------------- checks

def secret_problems(compose: dict, text: str) -> list[str]:
    """trust authentication, a password written into the file, a password on a command line."""
    problems = []
    if re.search(r"\btrust\b", text, re.I):
        problems.append("'trust' appears in the compose file")
    if URL_PASSWORD.search(text):
        problems.append("a URL with a password: " + URL_PASSWORD.search(text).group(0))
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
        for key, value in env.items():
            if key == "POSTGRES_HOST_AUTH_METHOD" and str(value).lower() in ("trust", "password", "md5"):
                problems.append(f"{name}: {key}={value}")
            if SECRET_NAME.search(key) and value not in (None, "") and not SECRET_FROM_ENV.match(str(value)):
                problems.append(f"{name}: {key} has a literal value")
        for field in ("command", "entrypoint"):
            argv = service.get(field) or []
            argv = argv.split() if isinstance(argv, str) else argv
            if "--storage" in argv or any(URL_PASSWORD.search(str(a)) or "password=" in str(a).lower() for a in argv):
                problems.append(f"{name}: storage URL or password on the {field} line")
    return problems


def port_problems(compose: dict) -> list[str]:
    """Every published port on loopback; the database publishes none; no host networking."""
    problems = []
    for name, service in compose["services"].items():
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host")
        ports = service.get("ports") or []
        if name == DB and ports:
            problems.append(f"{DB} publishes {ports}")
        for port in ports:
            host_ip = port.get("host_ip") if isinstance(port, dict) else (
                str(port).rsplit(":", 2)[0] if str(port).count(":") >= 2 else None)
            if host_ip not in ("127.0.0.1", "[::1]"):
                problems.append(f"{name}: port {port} is not bound to 127.0.0.1")
    return problems


def worker_problems(compose: dict) -> list[str]:
    """init as PID 1 and one GPU per replica (see docker/gpu-worker.sh for why not `count: 1`)."""
    worker = compose["services"]["worker"]
    problems = []
    if worker.get("init") is not True:
        problems.append("worker: no init: true (SIGTERM would not reach bench)")
    devices = (((worker.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])]
    if len(gpus) != 1:
        problems.append("worker: no nvidia GPU reservation")
    else:
        # Docker maps `count: N` to GPUs 0..N-1 in every container: with replicas, a per-replica
        # choice is needed, here bench-gpu-worker (all GPUs reserved, one claimed per worker).
        if str(gpus[0].get("count")) != "all" or gpus[0].get("device_ids"):
            problems.append(f"worker: reservation {gpus[0]} gives every replica the same GPU(s)")
    if worker.get("entrypoint") != ["bench-gpu-worker"]:
        problems.append("worker: not started through bench-gpu-worker (one GPU per replica)")
    if not any(str(v).split(":")[:2] == ["gpu-locks", "/gpu-locks"] for v in worker.get("volumes") or []):
        problems.append("worker: the gpu-locks volume is not shared by the replicas")
    return problems


def _dockerignore_regex(pattern: str) -> re.Pattern:
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, a folder takes its contents."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.lstrip("!"))
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


MUST_BE_IGNORED = ["runs/sweeps/s.journal", ".git/HEAD", "docker/.env", "wandb/run-1/x", ".venv/bin/python",
                   "venv/bin/python", "bench/__pycache__", "models/x.ckpt",
                   "runs/a/checkpoints/last.ckpt", ".bench-cache/f.npz", "lightning_logs/v0/m.yaml"]


def dockerignore_problems(patterns: list[str]) -> list[str]:
    problems = [f"{p} is sent to the build" for p in MUST_BE_IGNORED if not dockerignored(p, patterns)]
    copied = re.findall(r"^COPY\s+(.+)\s+\S+$", DOCKERFILE, re.M)
    for sources in copied:
        for source in sources.split():
            if dockerignored(source, patterns):
                problems.append(f"{source} is copied by the Dockerfile but ignored")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    if not re.search(r"^ARG GIT_SHA\b", text, re.M):
        problems.append("no ARG GIT_SHA")
    if not re.search(r"^ENV BENCH_GIT_SHA=\$\{?GIT_SHA\}?\s*$", text, re.M):
        problems.append("GIT_SHA does not become ENV BENCH_GIT_SHA")
    if not re.search(r"org\.opencontainers\.image\.revision=\$\{?GIT_SHA\}?", text):
        problems.append("no org.opencontainers.image.revision label")
    if "COPY docker/gpu-worker.sh /usr/local/bin/bench-gpu-worker" not in text:
        problems.append("bench-gpu-worker is not in the image")
    return problems


# --------------------------------------------------------------------------- the real files

UV_BOOTSTRAP = re.compile(r"python3 -m venv ~/\.uv && ~/\.uv/bin/pip install -q uv==(\d+\.\d+\.\d+) && ~/\.uv/bin/uv run --locked ")


def _lock() -> dict:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def test_dockerfile_installs_the_readme_pins():
    readme = (ROOT / "README.md").read_text()
    # README, .ci/run and Dockerfile install from uv.lock, with the same uv...
    setup = readme[readme.index("## Set-up"):readme.index("\n## ", readme.index("## Set-up") + 1)]
    commands = [line.strip() for line in setup.splitlines() if UV_BOOTSTRAP.search(line)]
    assert [UV_BOOTSTRAP.sub("", c) for c in commands] == ["bench run --model scurnn --task copying",
                                                           "--extra test pytest"]
    uv_version = UV_BOOTSTRAP.search(commands[0]).group(1)
    assert UV_BOOTSTRAP.search(commands[1]).group(1) == uv_version
    assert f"TEST_CMD='{commands[1]}'" in (ROOT / ".ci" / "run").read_text()
    assert "COPY pyproject.toml uv.lock" in DOCKERFILE
    # ...and no package is installed by name but uv itself (that could pull a different torch).
    installs = re.findall(r"pip install ([^\n]+)", DOCKERFILE)
    assert installs == [f"uv=={uv_version}"]
    assert re.findall(r"uv (sync|pip|add|run)\b([^\n]*)", DOCKERFILE) == [("sync", " --locked --no-editable --extra dashboard")]
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv" in DOCKERFILE and "VIRTUAL_ENV=/opt/venv" in DOCKERFILE
    assert re.search(r"^USER bench$", DOCKERFILE, re.M) and 'ENTRYPOINT ["bench"]' in DOCKERFILE
    assert DOCKERFILE.startswith("#")
    # the extra the image installs exists (optuna-dashboard, which compose runs) and is locked
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("optuna-dashboard") for d in extras["dashboard"])
    assert "optuna-dashboard" in {p["name"] for p in _lock()["package"]}


def test_dockerfile_python_is_one_the_lock_was_made_for():
    python = re.search(r"^ARG PYTHON_VERSION=(3\.\d+)$", DOCKERFILE, re.M).group(1)
    assert python == "3.11"                                  # the interpreter the pins are tested with
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", DOCKERFILE, re.M)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.10" and _lock()["requires-python"] == requires


def _locked_versions(lock: dict, python: tuple[int, int]) -> dict[str, str]:
    """name -> version that uv installs on Linux x86_64 for this Python (forks by python_full_version)."""
    versions = {}
    for package in lock["package"]:
        markers = package.get("resolution-markers")
        if markers and not any(_python_matches(m, python) for m in markers):
            continue
        versions[package["name"]] = package["version"]
    return versions


def _python_matches(marker: str, python: tuple[int, int]) -> bool:
    found = re.findall(r"python_full_version (<|>=|==) '(3\.\d+)(?:\.\*)?'", marker)
    ok = {"<": lambda v: python < v, ">=": lambda v: python >= v, "==": lambda v: python == v}
    return all(ok[op](tuple(map(int, v.split(".")))) for op, v in found)


def test_lock_agrees_with_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(re.match(r"([\w.-]+)==([\w.]+)$", d).groups() for d in project["dependencies"] if "==" in d)
    lock = _lock()
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
    for python in [(3, 10), (3, 11), (3, 13)]:
        locked = {norm(k): v for k, v in _locked_versions(lock, python).items()}
        for name, version in pins.items():
            assert locked.get(norm(name)) == version, (name, python)
    locked = _locked_versions(lock, (3, 11))
    assert pins["torch"].startswith("2.9.") and pins["torchaudio"].startswith("2.9.")
    # the CUDA 12.8 build of torch (the nvidia-*-cu12 wheels) and the releases tested on 3.11
    assert locked["nvidia-cudnn-cu12"] == "9.10.2.21" and locked["numpy"] == "2.4.6"
    assert locked["pandas"] == "3.1.1" and locked["matplotlib"] == "3.11.2"


def test_compose_file_has_postgres_workers_and_dashboard():
    services = _compose()["services"]
    assert set(services) == {DB, "worker", "dashboard"}
    worker, dashboard = services["worker"], services["dashboard"]
    assert worker["command"][0] == "sweep" and "--storage" not in worker["command"]
    storage = worker["environment"]["BENCH_STORAGE"]           # the harness reads it (bench/secrets.py)
    assert storage == f"postgresql://bench@{DB}:5432/optuna"
    assert worker["depends_on"][DB]["condition"] == "service_healthy"
    assert dashboard["entrypoint"][0] == "optuna-dashboard"
    assert dashboard["command"] == [storage.replace("postgresql://", "postgresql+psycopg2://")]
    # the password reaches libpq as PGPASSWORD, from the same variable as the database's
    for name in ("worker", "dashboard"):
        assert services[name]["environment"]["PGPASSWORD"].startswith("${POSTGRES_PASSWORD:?"), name
    assert services[DB]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert services[DB]["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "--auth-local=scram-sha-256" in services[DB]["environment"]["POSTGRES_INITDB_ARGS"]


def test_compose_has_no_trust_auth_and_no_password():
    assert secret_problems(_compose(), COMPOSE_TEXT) == []


def test_compose_publishes_only_loopback_ports_and_no_database_port():
    compose = _compose()
    assert port_problems(compose) == []
    assert compose["services"]["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]


def test_compose_worker_has_init_and_one_gpu_per_replica():
    assert worker_problems(_compose()) == []
    assert "gpu-locks" in _compose()["volumes"]


def test_dockerignore_keeps_runs_git_secrets_and_caches_out():
    assert dockerignore_problems(_dockerignore_patterns()) == []


def test_dockerfile_bakes_in_the_git_sha():
    assert dockerfile_problems(DOCKERFILE) == []
    # after the install layer: a new commit must not re-install everything
    assert DOCKERFILE.index("ARG GIT_SHA") > DOCKERFILE.index("uv sync")
    compose = _compose()
    assert compose["x-bench"]["build"]["args"]["GIT_SHA"] == "${GIT_SHA:-}"


def test_env_example_has_placeholders_and_the_real_file_is_ignored():
    text = ENV_EXAMPLE.read_text()
    values = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert values["POSTGRES_PASSWORD"] == "change-me" and values["WANDB_API_KEY"] == ""
    assert "never be committed" in text
    # every ${VAR:?...} the compose file requires is in the template
    assert set(re.findall(r"\$\{(\w+):\?", COMPOSE_TEXT)) <= set(values)
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "docker/.env is not in .gitignore"
    assert subprocess.run(["git", "check-ignore", "-q", "docker/env.example"], cwd=ROOT).returncode == 1


# --------------------------------------------------------------------------- the checks can fail

def _faulty_composes():
    base = _compose()

    def variant(edit):
        compose = copy.deepcopy(base)
        edit(compose)
        return compose

    def set_env(service, key, value):
        return lambda c: c["services"][service]["environment"].__setitem__(key, value)

    yield "trust auth", secret_problems, variant(set_env(DB, "POSTGRES_HOST_AUTH_METHOD", "trust")), None
    yield "password literal", secret_problems, variant(set_env(DB, "POSTGRES_PASSWORD", "bench")), None
    yield "password default", secret_problems, variant(set_env("worker", "PGPASSWORD", "${POSTGRES_PASSWORD:-bench}")), None
    yield "password in URL", secret_problems, base, COMPOSE_TEXT.replace("bench@postgres", "bench:hunter2@postgres")
    yield "storage flag", secret_problems, variant(lambda c: c["services"]["worker"]["command"].extend(
        ["--storage", "postgresql://bench@postgres/optuna"])), None
    yield "db port", port_problems, variant(lambda c: c["services"][DB].__setitem__("ports", ["127.0.0.1:5432:5432"])), None
    yield "all interfaces", port_problems, variant(lambda c: c["services"]["dashboard"].__setitem__("ports", ["8080:8080"])), None
    yield "0.0.0.0", port_problems, variant(lambda c: c["services"]["dashboard"].__setitem__(
        "ports", [{"target": 8080, "published": 8080, "host_ip": "0.0.0.0"}])), None
    yield "no init", worker_problems, variant(lambda c: c["services"]["worker"].pop("init")), None
    yield "count 1", worker_problems, variant(lambda c: c["services"]["worker"]["deploy"]["resources"]
                                              ["reservations"]["devices"][0].__setitem__("count", 1)), None
    yield "no gpu", worker_problems, variant(lambda c: c["services"]["worker"].pop("deploy")), None
    yield "no claim", worker_problems, variant(lambda c: c["services"]["worker"].pop("entrypoint")), None


@pytest.mark.parametrize("case", list(_faulty_composes()), ids=lambda case: case[0])
def test_compose_checks_catch_an_injected_fault(case):
    _, check, compose, text = case
    if text is not None:                    # a fault in the raw text: parse that text
        compose = yaml.safe_load(text)
    args = (compose, text or COMPOSE_TEXT) if check is secret_problems else (compose,)
    assert check(*args), f"{check.__name__} found nothing"


@pytest.mark.parametrize("drop", ["runs/", ".git", "**/.env", "**/*.ckpt", "**/__pycache__"])
def test_dockerignore_check_catches_a_missing_pattern(drop):
    patterns = [p for p in _dockerignore_patterns() if p != drop and p != drop.rstrip("/")]
    assert len(patterns) < len(_dockerignore_patterns()), drop
    assert dockerignore_problems(patterns)
    assert dockerignore_problems(_dockerignore_patterns() + ["bench/"])         # COPY bench would be empty


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("ARG GIT_SHA=", "ARG GIT_REV="),
    lambda t: t.replace("ENV BENCH_GIT_SHA=$GIT_SHA", "ENV BENCH_GIT_SHA=unknown"),
    lambda t: t.replace("org.opencontainers.image.revision", "revision"),
])
def test_dockerfile_check_catches_a_missing_sha(edit):
    assert edit(DOCKERFILE) != DOCKERFILE
    assert dockerfile_problems(edit(DOCKERFILE))


# --------------------------------------------------------------------------- bench-gpu-worker

@pytest.fixture
def fake_node(tmp_path):
    """A PATH with a fake nvidia-smi (GPUs 0 and 1) and a fake bench that reports its GPU and
    then holds on (exec sleep keeps the inherited lock descriptor, like the real bench)."""
    if not (shutil.which("bash") and shutil.which("flock")):
        pytest.skip("bash and flock (util-linux) are needed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text('#!/bin/sh\n[ -n "$FAKE_GPUS" ] || exit 9\nprintf "%s\\n" $FAKE_GPUS\n')
    (bin_dir / "bench").write_text('#!/bin/sh\necho "GPU=${CUDA_VISIBLE_DEVICES-none} ARGS=$*"\nexec sleep 60\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_GPU", "CUDA_VISIBLE"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", BENCH_GPU_LOCKS=str(tmp_path / "locks"), FAKE_GPUS="0 1")
    procs = []

    def start(**extra):
        proc = subprocess.Popen(["bash", str(GPU_WORKER), "sweep", "--study", "s"], env={**env, **extra},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_gpu_worker_gives_each_replica_its_own_gpu(fake_node):
    workers = [fake_node(), fake_node()]                    # started together, as compose does
    lines = [w.stdout.readline().strip() for w in workers]
    assert sorted(lines) == ["GPU=0 ARGS=sweep --study s", "GPU=1 ARGS=sweep --study s"]
    # a third worker on a two-GPU node gets none: fails fast with poll 0...
    third = fake_node(BENCH_GPU_POLL_S="0")
    assert third.wait(timeout=10) == 3 and "held by another worker" in third.stderr.read()
    # ...or waits, and takes the GPU of a worker that ended (the kernel drops its lock)
    waiting = fake_node(BENCH_GPU_POLL_S="0.1")
    time.sleep(0.5)
    assert waiting.poll() is None
    workers[1].kill()
    workers[1].wait()
    assert waiting.stdout.readline().strip() == lines[1]


def test_gpu_worker_honours_bench_gpus_and_runs_without_gpus(fake_node):
    assert fake_node(BENCH_GPUS="1").stdout.readline().strip() == "GPU=1 ARGS=sweep --study s"
    # nvidia-smi fails (no driver): CPU, not a crash
    assert fake_node(FAKE_GPUS="").stdout.readline().strip() == "GPU=none ARGS=sweep --study s"


# --------------------------------------------------------------------------- docker compose config

def _compose_command():
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _config(env_file: Path) -> subprocess.CompletedProcess:
    command = _compose_command()
    if command is None:
        return _schema_config(env_file)
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "WANDB_API_KEY")}
    return subprocess.run(command + ["-f", str(DOCKER / "compose.yaml"), "--env-file", str(env_file), "config"],
                          capture_output=True, text=True, env=env)


# Without Docker: the Compose Specification's JSON schema (compose_spec.json, shipped in the
# docker-compose 1.29 wheel; .ci/run downloads it and names it in BENCH_COMPOSE_SCHEMA) after
# Compose's variable interpolation, which the schema does not know about.
_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                       r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
    ${VAR?error}, ${VAR:+other}, ${VAR+other}; raises ValueError for a required variable."""
    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg, value = m.group("op"), m.group("arg") or "", env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else value
        if op in (":?", "?"):
            if unset:
                raise ValueError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in (":+", "+"):
            return "" if unset else arg
        return value or ""
    return _VARIABLE.sub(one, text)


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _schema_config(env_file: Path, text: str | None = None) -> subprocess.CompletedProcess:
    """`docker compose config`'s answer, from the schema: (0, the resolved YAML) or (1, errors)."""
    schema_path = os.environ.get("BENCH_COMPOSE_SCHEMA")
    if not schema_path:
        if os.environ.get("BENCH_REQUIRE_COMPOSE", "").strip() == "1":
            pytest.fail("BENCH_REQUIRE_COMPOSE=1 but neither docker compose nor BENCH_COMPOSE_SCHEMA is available")
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here, and no BENCH_COMPOSE_SCHEMA")
    import json

    import jsonschema

    text = (DOCKER / "compose.yaml").read_text() if text is None else text
    try:
        resolved = yaml.safe_load(interpolate(text, _env_file(env_file)))
    except ValueError as exc:
        return subprocess.CompletedProcess([], 1, "", str(exc))
    validator = jsonschema.Draft7Validator(json.loads(Path(schema_path).read_text()))
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(resolved)]
    return subprocess.CompletedProcess([], 1 if errors else 0, yaml.safe_dump(resolved), "\n".join(errors))


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    cases = {"${SET}": "x", "$SET": "x", "${UNSET}": "", "${UNSET:-d}": "d", "${EMPTY:-d}": "d", "${EMPTY-d}": "",
             "${SET:+alt}": "alt", "${UNSET:+alt}": "", "$$SET": "$SET", "${SET:?no}": "x", "a${SET}b": "axb"}
    for text, expected in cases.items():
        assert interpolate(text, env) == expected, text
    for text in ("${UNSET:?needed}", "${EMPTY:?needed}", "${UNSET?needed}"):
        with pytest.raises(ValueError, match="needed"):
            interpolate(text, env)


def test_the_schema_validator_refuses_a_broken_file():
    """The schema path can fail: a misspelt key and a wrong type are each refused."""
    if _compose_command() is not None and not os.environ.get("BENCH_COMPOSE_SCHEMA"):
        pytest.skip("docker compose validates here; the schema is not downloaded")
    good = (DOCKER / "compose.yaml").read_text()
    assert _schema_config(ENV_EXAMPLE, good).returncode == 0
    for bad in (good.replace("    environment:", "    enviroment:", 1), good.replace("${WORKERS:-2}", "two")):
        assert bad != good
        proc = _schema_config(ENV_EXAMPLE, bad)
        assert proc.returncode != 0 and proc.stderr, bad


def test_docker_compose_config_parses():
    """`docker compose config` (or docker-compose v1) validates the file; no engine needed."""
    proc = _config(ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["services"]["worker"]["environment"]["PGPASSWORD"] == "change-me"


def test_docker_compose_config_refuses_to_run_without_a_password(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = _config(empty)
    assert proc.returncode != 0 and "POSTGRES_PASSWORD" in proc.stderr
