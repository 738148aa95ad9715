"""What can be checked of the compose deployment without a registry: the file itself.

It parses, names every service the code expects, wires the worker to the host's engine, keeps the
data directory at one absolute path everywhere (sandboxes are siblings: bind paths are host
paths), has health checks, and uses only settings and commands that exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edc.cli.main import app
from edc.config import Settings
from edc.sandbox.docker import IMAGE_PYTHON

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent
COMPOSE = DEPLOY / "docker-compose.yml"
SERVICES = {"portal", "worker", "redis", "postgres"}
DOCKER_SOCKET = "/var/run/docker.sock"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's interpolation with every variable unset: defaults apply, required ones are X."""

    def replace(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        return match.group("arg") if op.endswith("-") else "X"

    return VARIABLE.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target path → source (a named volume or a host path), short syntax only."""
    found = {}
    for entry in service.get("volumes") or []:
        source, target, *_ = interpolate(entry).split(":")
        found[target] = source
    return found


def command(service: dict[str, Any]) -> str:
    cmd = service.get("command") or []
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_every_service_the_code_expects_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= SERVICES
    assert "edc portal" in command(services["portal"])
    assert "edc worker" in command(services["worker"])


def test_the_commands_exist_in_the_cli() -> None:
    runner = CliRunner()
    for argv in (["portal", "--help"], ["worker", "--help"], ["db", "upgrade", "--help"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, (argv, result.output)


def test_the_worker_drives_the_hosts_engine(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert mounts(worker).get(DOCKER_SOCKET) == DOCKER_SOCKET
    env = environment(worker)
    assert env["EDC_SANDBOX"] == "docker"
    assert env["EDC_SANDBOX_IMAGE"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert device["device_ids"]  # one GPU per worker, chosen by the operator


def test_the_portal_is_published_on_8000_of_the_loopback_only(
    services: dict[str, dict[str, Any]],
) -> None:
    portal = services["portal"]
    # On every interface, a client reaching the portal past the reverse proxy could forge the
    # forwarded address the portal believes from the proxy's.
    assert [interpolate(str(p)) for p in portal["ports"]] == ["127.0.0.1:8000:8000"]
    assert "--port 8000" in command(portal)
    assert "--host 0.0.0.0" in command(portal)


def test_health_checks(services: dict[str, dict[str, Any]]) -> None:
    def check(name: str) -> str:
        test = services[name]["healthcheck"]["test"]
        return " ".join(test) if isinstance(test, list) else str(test)

    assert "/healthz" in check("portal")
    assert "ping" in check("redis")
    assert "pg_isready" in check("postgres")
    assert "ping" in check("worker")


def test_every_edc_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    fields = set(Settings.model_fields)
    used = {key for service in services.values() for key in environment(service)}
    edc_keys = {key for key in used if key.startswith("EDC_")}
    assert edc_keys, "the platform is configured through EDC_* variables"
    unknown = {key for key in edc_keys if key.removeprefix("EDC_").lower() not in fields}
    assert not unknown, f"not fields of edc.config.Settings: {sorted(unknown)}"


def test_the_configuration_is_valid_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in ("portal", "worker"):
        env = environment(services[name])
        settings = Settings(
            **{key.removeprefix("EDC_").lower(): value for key, value in env.items()}
        )
        assert settings.env == "production"
        assert settings.database_url is not None
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.database_url.split("@")[1].startswith("postgres:")
        assert settings.redis_url == "redis://redis:6379/0"
        assert "X@postgres:5432" in settings.database_url  # the required password, unset here


def test_the_database_is_migrated_before_the_platform_starts(
    services: dict[str, dict[str, Any]],
) -> None:
    (migrator,) = [s for s in services.values() if "edc db upgrade" in command(s)]
    assert migrator["depends_on"]["postgres"]["condition"] == "service_healthy"
    migrator_name = next(n for n, s in services.items() if s is migrator)
    for name in ("portal", "worker"):
        condition = services[name]["depends_on"][migrator_name]["condition"]
        assert condition == "service_completed_successfully"


def test_data_lives_at_the_same_absolute_path_on_host_and_in_containers(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    volumes = compose["volumes"]
    for name in ("portal", "worker", "migrate"):
        env = environment(services[name])
        data_dir = env["EDC_DATA_DIR"]
        assert data_dir.startswith("/")
        volume = mounts(services[name])[data_dir]
        host = interpolate(volumes[volume]["driver_opts"]["device"])
        assert volumes[volume]["driver_opts"]["o"] == "bind"
        assert host == data_dir, f"{name}: host {host} is mounted at {data_dir}"
        # The task's model is mounted into sandboxes too: it must be a host path as well.
        assert env["EDC_TASK_DIR"].startswith(data_dir + "/")


def test_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose["volumes"])
    for service in services.values():
        for source in mounts(service).values():
            if not source.startswith("/"):
                assert source in declared
    assert {"pg-data", "redis-data"} <= declared


def test_the_images_are_built_from_this_repository(services: dict[str, dict[str, Any]]) -> None:
    build = services["portal"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == REPO and dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (context / source).exists(), f"{dockerfile.name} copies missing {source}"
    gpu = (DEPLOY / "sandbox-image" / "Dockerfile.gpu").read_text()
    assert IMAGE_PYTHON in gpu  # where the Docker backend runs Python


def test_the_compose_interpolation_helper() -> None:
    assert interpolate("${A:-/srv/x}/task") == "/srv/x/task"
    assert interpolate("${A:?set it}") == "X"
    assert interpolate("$${HOME}") == "${HOME}"
