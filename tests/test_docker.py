"""What can be checked of docker/ without a Docker engine: pins and the compose file's shape."""
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_installs_the_readme_pins():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    # README and Dockerfile install the project with the same constraints file...
    assert 'pip install -c constraints.txt -e ".[test]"' in readme
    assert re.search(r'pip install -c constraints.txt "\.\[dashboard\]"', dockerfile)
    assert "COPY pyproject.toml constraints.txt" in dockerfile
    # ...and no other package is installed by name (that could pull a different torch).
    installs = re.findall(r"pip install ([^\n]+)", dockerfile)
    assert installs == ['-c constraints.txt ".[dashboard]"']
    assert re.search(r"^USER bench$", dockerfile, re.M) and 'ENTRYPOINT ["bench"]' in dockerfile
    assert dockerfile.startswith("#") and "FROM nvidia/cuda:" in dockerfile


def test_constraints_agree_with_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(re.match(r"([\w.-]+)==([\w.]+)$", d).groups() for d in project["dependencies"] if "==" in d)
    constraints = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split()
                       if "==" in line and not line.startswith("#"))
    norm = lambda name: name.lower().replace("_", "-")
    constraints = {norm(k): v for k, v in constraints.items()}
    for name, version in pins.items():
        assert constraints.get(norm(name)) == version, name
    assert pins["torch"].startswith("2.9.") and pins["torchaudio"].startswith("2.9.")


def test_compose_file_has_postgres_workers_and_dashboard():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "worker", "dashboard"}
    worker = services["worker"]
    assert worker["command"][0] == "sweep" and "--storage" in worker["command"]
    storage = worker["command"][worker["command"].index("--storage") + 1]
    assert storage.startswith("postgresql://") and "@postgres:5432/" in storage
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["dashboard"]["entrypoint"][0] == "optuna-dashboard"
    assert services["dashboard"]["command"] == [storage.replace("postgresql://", "postgresql+psycopg2://")]


def _compose_command():
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_parses():
    """`docker compose config` (or docker-compose v1) validates the file; no engine needed."""
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here")
    proc = subprocess.run(command + ["-f", str(ROOT / "docker" / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
