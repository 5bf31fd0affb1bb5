"""The deployment file: valid for docker-compose (Debian's package; no Docker engine runs here, so
the file is checked, not started), with the services the registry guide promises, each running a
command the CLI really has, from an image that holds every package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from safety.cli import app
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as docker-compose resolves it (anchors merged, variables filled)."""
    if shutil.which("docker-compose") is None:
        if IN_CI:
            pytest.fail("CI=true but docker-compose is missing: scripts/test installs Debian's package")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", "POSTGRES_PASSWORD": "s3cret"})
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)  # type: ignore[no-any-return]


def test_the_file_runs_apache_kafka_postgresql_a_consumer_a_projector_and_the_board(compose: dict[str, Any]):
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert services["postgres"]["image"].startswith("postgres:")
    for name, command in {"consumer": "consume", "projector": "project", "board": "dashboard"}.items():
        service = services[name]
        assert service["command"][:2] == ["safety-monitor", command]
        store = service["environment"]["SAFETY_MONITOR_STORE"]
        assert store == "postgresql://safety:s3cret@postgres:5432/safety"  # the password comes from the environment
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["consumer"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["board"]["ports"][0]["target"] == 8501


def test_every_service_command_parses_with_the_cli(compose: dict[str, Any]):
    runner = CliRunner()
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:1] != ["safety-monitor"]:
            continue
        result = runner.invoke(app, [*command[1:], "--help"])  # unknown options fail before --help
        assert result.exit_code == 0, f"{name}: {command}: {result.output}"


def test_the_image_holds_every_package_the_project_installs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert f"COPY {pattern.rstrip('*')} ./{pattern.rstrip('*')}" in dockerfile
