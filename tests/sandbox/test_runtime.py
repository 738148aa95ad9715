"""The decoder's runtime is the task's choice: the sandbox sees exactly what the task names.

With no runtime named a decoder gets the standard library and numpy, on every backend; with a
runtime environment (bubblewrap) its packages and nothing of the worker's; with a runtime image
(Docker) that image. What the task promises is checked by ``edc task check`` and the worker's
start-up self-test, which refuse a runtime that lacks it.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import typer
from typer.testing import CliRunner

from edc.cli import runtime as cli_runtime
from edc.config import Settings, get_settings
from edc.errors import InvalidTask, SandboxUnavailable
from edc.sandbox.backends import BACKENDS, backend_class, choose_sandbox, runtime_backends
from edc.sandbox.bwrap import BwrapSandbox
from edc.sandbox.docker import DockerSandbox
from edc.sandbox.runtime import DecoderRuntime, missing_imports, probe_imports, site_packages
from edc.tasks.task import Task
from edc.worker import canary
from tests.support.runtime import task_with_runtime

PLATFORM_MODULES = ("edc", "fastapi", "sqlalchemy", "rq", "pydantic")


def _available(name: str) -> None:
    reason = backend_class(name).unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the {name} sandbox for real, but: {reason}")
        pytest.skip(f"{name} sandbox unavailable: {reason}")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_without_a_runtime_a_decoder_gets_the_stdlib_and_numpy_only(name: str) -> None:
    _available(name)
    sandbox = backend_class(name).from_settings(Settings())
    found = probe_imports(sandbox, ("numpy", "json", "torch", *PLATFORM_MODULES))
    assert "version" in found["numpy"] and "version" in found["json"], found
    for module in ("torch", *PLATFORM_MODULES):
        assert "ModuleNotFoundError" in found[module].get("error", ""), (module, found)


def test_a_runtime_environment_replaces_the_workers_libraries(torch_environment: Path) -> None:
    _available("bwrap")
    runtime = DecoderRuntime(imports=("numpy", "torch"), env_dir=torch_environment)
    sandbox = BwrapSandbox.from_settings(Settings(), runtime)
    found = probe_imports(sandbox, ("numpy", "torch", *PLATFORM_MODULES))
    assert found["torch"].get("version", "").startswith("2.13.0"), found
    assert "version" in found["numpy"], found
    for module in PLATFORM_MODULES:
        assert "ModuleNotFoundError" in found[module].get("error", ""), (module, found)
    assert missing_imports(found, runtime.imports) == []
    assert str(torch_environment) in sandbox.identity()  # the result's provenance names it


def test_an_environment_for_another_python_is_refused(tmp_path: Path) -> None:
    env = tmp_path / "env"
    (env / "lib" / "python3.9" / "site-packages").mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.9.2\n")
    with pytest.raises(SandboxUnavailable, match=r"python3\.9.*rebuild it"):
        site_packages(env)
    reason = BwrapSandbox.unavailable_reason(Settings(), DecoderRuntime(env_dir=env))
    assert reason is not None and "python3.9" in reason
    missing = BwrapSandbox.unavailable_reason(Settings(), DecoderRuntime(env_dir=tmp_path / "no"))
    assert missing is not None and "does not exist" in missing and "edc env build" in missing


def test_the_workers_own_environment_is_never_a_runtime() -> None:
    _available("bwrap")
    own = DecoderRuntime(env_dir=Path(sys.prefix))
    reason = BwrapSandbox.unavailable_reason(Settings(), own)
    assert reason is not None and "the worker's own Python packages" in reason


def test_a_pip_target_folder_is_its_own_package_folder(tmp_path: Path) -> None:
    (tmp_path / "numpy").mkdir()
    assert site_packages(tmp_path) == tmp_path


def test_task_toml_runtime_is_validated_and_resolved(tmp_path: Path) -> None:
    task = Task.load(
        task_with_runtime(tmp_path / "t", {"imports": ["numpy", "torch"], "env": "rt"})
    )
    assert task.runtime.imports == ("numpy", "torch")
    assert task.runtime.env_dir == (tmp_path / "t" / "rt").resolve()
    assert task.runtime.image is None
    no_numpy = task_with_runtime(tmp_path / "u", {"imports": ["torch"]})
    with pytest.raises(InvalidTask, match="must include numpy"):
        Task.load(no_numpy)
    not_a_module = task_with_runtime(tmp_path / "v", {"imports": ["numpy", "rm -rf /"]})
    with pytest.raises(InvalidTask, match="not a module name"):
        Task.load(not_a_module)


def _check(task_dir: Path) -> tuple[int, str]:
    app = typer.Typer()
    task_app = typer.Typer()
    cli_runtime.register(app, task_app)
    app.add_typer(task_app, name="task")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["task", "check", "--task", str(task_dir)], env=_env())
    get_settings.cache_clear()
    return result.exit_code, result.output


def _env() -> dict[str, str]:
    return {"EDC_SANDBOX": "bwrap"}


def test_task_check_refuses_a_runtime_that_lacks_what_the_task_promises(
    tmp_path: Path, torch_environment: Path
) -> None:
    _available("bwrap")
    promised = {"imports": ["numpy", "torch"]}
    code, out = _check(task_with_runtime(tmp_path / "bare", promised))
    assert code == 2, out
    assert "torch" in out and "No module named 'torch'" in out and "lacks" in out

    code, out = _check(
        task_with_runtime(tmp_path / "torch", {**promised, "env": str(torch_environment)})
    )
    assert code == 0, out
    assert "2.13.0" in out and "offers everything" in out


def test_the_workers_self_test_refuses_a_missing_promise(tmp_path: Path) -> None:
    _available("bwrap")
    settings = Settings(data_dir=tmp_path / "data", sandbox="bwrap")
    sandbox = BwrapSandbox.from_settings(settings)
    with pytest.raises(SandboxUnavailable, match="promises decoders torch"):
        canary.check(settings, sandbox, ("numpy", "torch"))
    assert canary.check(settings, sandbox, ("numpy",)) == []


@pytest.fixture
def runtime_image() -> Iterator[str]:
    """The sandbox image under another name, as an organiser's runtime image would be."""
    _available("docker")
    client = docker.from_env()
    name = f"edc-runtime-test:{uuid.uuid4().hex[:8]}"
    client.images.get(Settings().sandbox_image).tag(name)
    yield name
    client.images.remove(name)
    client.close()


def test_docker_runs_start_from_the_tasks_runtime_image(runtime_image: str) -> None:
    runtime = DecoderRuntime(image=runtime_image)
    assert DockerSandbox.unavailable_reason(Settings(), runtime) is None
    sandbox = DockerSandbox.from_settings(Settings(), runtime)
    assert sandbox.image == runtime_image
    assert runtime_image in sandbox.identity()
    found = probe_imports(sandbox, ("numpy", "edc"))
    assert "version" in found["numpy"] and "error" in found["edc"], found

    gone = DecoderRuntime(image=f"edc-no-such-runtime:{uuid.uuid4().hex[:8]}")
    reason = DockerSandbox.unavailable_reason(Settings(), gone)
    assert reason is not None and "runtime image" in reason and gone.image in reason


def test_env_build_makes_an_environment_the_sandbox_uses(tmp_path: Path) -> None:
    # A small package from the local wheels, so the command's whole path runs in seconds.
    _available("bwrap")
    app = typer.Typer()
    cli_runtime.register(app, typer.Typer())
    folder = tmp_path / "env"
    # Wide enough that the folder's path, however deep the temporary folder, is on one line.
    wide = {"COLUMNS": "500"}
    result = CliRunner().invoke(app, ["env", "build", str(folder), "--with", "mpmath"], env=wide)
    assert result.exit_code == 0, result.output
    assert f'env = "{folder}"' in result.output
    found = probe_imports(
        BwrapSandbox(runtime=DecoderRuntime(env_dir=folder)), ("numpy", "mpmath", "edc")
    )
    assert "version" in found["mpmath"] and "version" in found["numpy"], found
    assert "error" in found["edc"]

    again = CliRunner().invoke(app, ["env", "build", str(folder)])
    assert again.exit_code == 2 and "not empty" in again.output
    shutil.rmtree(folder)


def test_an_environment_that_holds_the_platforms_folders_is_refused(tmp_path: Path) -> None:
    # A folder with no venv layout is bound whole: it must not hold what never enters.
    data = tmp_path / "srv" / "data"
    data.mkdir(parents=True)
    settings = Settings(data_dir=data)
    reason = BwrapSandbox.unavailable_reason(settings, DecoderRuntime(env_dir=tmp_path / "srv"))
    assert reason is not None and "overlaps" in reason and str(data) in reason
    own_lib = Path(sys.prefix) / "lib"  # holds the worker's site-packages
    reason = BwrapSandbox.unavailable_reason(settings, DecoderRuntime(env_dir=own_lib))
    assert reason is not None and "overlaps" in reason


def test_auto_never_picks_a_backend_that_cannot_offer_the_runtime(tmp_path: Path) -> None:
    env_only = DecoderRuntime(imports=("numpy",), env_dir=tmp_path)
    image_only = DecoderRuntime(imports=("numpy",), image="edc-sandbox:latest")
    assert runtime_backends(env_only) == ("bwrap",)
    assert runtime_backends(image_only) == ("docker",)
    assert runtime_backends(DecoderRuntime()) == ("docker", "bwrap")
    with pytest.raises(SandboxUnavailable, match="bwrap sandbox only, but EDC_SANDBOX is docker"):
        choose_sandbox(Settings(sandbox="docker"), env_only)
    with pytest.raises(SandboxUnavailable, match="docker sandbox only, but EDC_SANDBOX is bwrap"):
        choose_sandbox(Settings(sandbox="bwrap"), image_only)
    (tmp_path / "numpy").mkdir()  # a pip --target folder
    _available("bwrap")
    assert isinstance(choose_sandbox(Settings(sandbox="auto"), env_only), BwrapSandbox)
