"""Nothing of the platform inside the bwrap sandbox: not its dependencies, not its package, not its
data or task directories, wherever they are installed (``/usr`` included); and the worker's
start-up self-test (``edc.worker.canary``) that checks it for real, shown able to fail."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import edc
from edc import db
from edc.config import Settings
from edc.errors import SandboxUnavailable
from edc.sandbox.base import MODEL_DIR, Mount, SandboxSpec
from edc.sandbox.bwrap import LIBRARIES_DIR, PACKAGE_DIR, BwrapSandbox, Layout, _site_dirs
from edc.services.tracks import add_track
from edc.tasks.task import bundled_task_dir
from edc.worker import canary
from edc.worker.sandboxes import track_dirs
from tests.support.platform import quick_task

REPO = Path(__file__).resolve().parents[2]
# Reports, for each "op:subject" argument, what happened: a module's file, a file's first bytes,
# a folder's entries, or the error's name.
PROBE = """
import json, os, sys
def attempt(op, subject):
    try:
        if op == "import":
            return {"file": __import__(subject).__file__}
        if op == "read":
            with open(subject, "rb") as f:
                return {"content": f.read(200).decode(errors="replace")}
        return {"entries": sorted(os.listdir(subject))}
    except (OSError, ImportError) as exc:
        return type(exc).__name__
print(json.dumps({arg: attempt(*arg.split(":", 1)) for arg in sys.argv[1:]}))
"""


@pytest.fixture(scope="module")
def bwrap_available() -> None:
    reason = BwrapSandbox.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the bwrap sandbox for real, but: {reason}")
        pytest.skip(reason)


@pytest.fixture
def under_usr() -> Iterator[Path]:
    """A fresh folder under /usr/local: inside the read-only /usr every sandbox binds."""
    if os.geteuid() != 0 or not os.access("/usr/local", os.W_OK):
        pytest.skip("needs root: installs under /usr/local, as a system-wide platform would be")
    path = Path("/usr/local") / f"edc-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def probe(
    sandbox: BwrapSandbox, tmp_path: Path, *ops: str, mounts: tuple[Mount, ...] = ()
) -> dict[str, Any]:
    submission = tmp_path / f"probe-{uuid.uuid4().hex[:6]}"
    submission.mkdir()
    spec = SandboxSpec(
        argv=(sandbox.python, "-c", PROBE, *ops),
        submission_dir=submission,
        mounts=mounts,
        memory_mb=512,
    )
    result = sandbox.run(spec)
    assert result.ok, result
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def reached(outcome: object) -> bool:
    """Whether an attempt got at something: a module, a file's content, a folder's entries."""
    return isinstance(outcome, dict) and any(outcome.values())


def plant(folder: Path, marker: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "secret.txt"
    secret.write_text(marker)
    return secret


class _Leaky(BwrapSandbox):
    """Deliberately broken: binds the given folders at their own path and puts the platform's
    package on the decoders' PYTHONPATH (what the self-test must catch)."""

    def __init__(self, *exposed: Path) -> None:
        super().__init__()
        self.exposed = exposed

    def layout(self) -> Layout:
        base = super().layout()
        return replace(
            base,
            python_dirs=(*base.python_dirs, *self.exposed),
            libraries=(*base.libraries, (PACKAGE_DIR, f"{LIBRARIES_DIR}/edc")),
        )


def test_only_the_standard_library_and_numpy_are_importable(
    bwrap_available: None, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    settings = Settings(data_dir=tmp_path / "data")
    data_secret = plant(settings.data_dir, marker)
    task = bundled_task_dir()
    modules = ["edc", "fastapi", "sqlalchemy", "pydantic", "pip", "rq", "numpy", "json"]
    ops = [f"import:{m}" for m in modules]
    ops += [
        f"read:{data_secret}",
        f"list:{settings.data_dir}",
        f"read:{PACKAGE_DIR / '__init__.py'}",
        f"list:{PACKAGE_DIR}",
    ]
    ops += [f"read:{task / 'task.toml'}", f"list:{task}", f"list:{task / 'prompts'}"]
    ops += [f"list:{d}" for d in _site_dirs()]  # the base Python's and /usr's among them

    report = probe(BwrapSandbox.from_settings(settings), tmp_path, *ops)

    assert report.pop("import:numpy") == {"file": f"{LIBRARIES_DIR}/numpy/__init__.py"}
    assert reached(report.pop("import:json"))
    assert marker not in json.dumps(report)
    for op, outcome in report.items():
        assert not reached(outcome), f"{op} reached {outcome} inside the sandbox"


def test_numpy_works_from_the_neutral_folder(bwrap_available: None, tmp_path: Path) -> None:
    code = (
        "import json, sys, numpy; a = numpy.arange(12.0).reshape(3, 4); "
        "print(json.dumps([float((a @ a.T).trace()), sys.path]))"
    )
    submission = tmp_path / "submission"
    submission.mkdir()
    sandbox = BwrapSandbox()
    result = sandbox.run(
        SandboxSpec(
            argv=(sandbox.python, "-c", code),
            submission_dir=submission,
            env={"PYTHONPATH": "/submission/vendor"},
            memory_mb=512,
        )
    )

    assert result.ok, result
    trace, path = json.loads(result.stdout)
    assert trace == 506.0  # compiled code and its vendored BLAS load from the neutral folder
    # The spec's own PYTHONPATH first, then the libraries; no site folder holds anything.
    assert path[1:3] == ["/submission/vendor", LIBRARIES_DIR]


def test_data_and_task_directories_under_usr_are_masked(
    bwrap_available: None, under_usr: Path, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    data_secret = plant(under_usr / "data", marker)
    task_secret = plant(under_usr / "task" / "prompts", marker)
    weights = plant(under_usr / "task" / "model", "weights")
    settings = Settings(data_dir=under_usr / "data", task_dir=under_usr / "task")
    ops = [f"read:{data_secret}", f"read:{task_secret}", f"list:{under_usr / 'task'}"]
    model = (Mount(weights.parent, MODEL_DIR),)

    hidden = probe(
        BwrapSandbox.from_settings(settings),
        tmp_path,
        *ops,
        f"read:{weights}",
        f"read:{MODEL_DIR}/{weights.name}",
        mounts=model,
    )
    told_nothing = probe(BwrapSandbox(), tmp_path, *ops)

    # The model stays reachable, through its mount only.
    assert hidden.pop(f"read:{MODEL_DIR}/{weights.name}") == {"content": "weights"}
    assert not any(reached(outcome) for outcome in hidden.values()), hidden
    assert marker not in json.dumps(hidden)
    # The same run by a backend not told of the folders reads them: the masks are what protects.
    assert told_nothing[f"read:{task_secret}"] == {"content": marker}


@pytest.fixture(scope="module")
def platform_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built once, offline, from a copy (the checkout stays as it is)."""
    build = tmp_path_factory.mktemp("wheel-build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, build / name)
    shutil.copytree(
        REPO / "src" / "edc",
        build / "src" / "edc",
        ignore=shutil.ignore_patterns("__pycache__", ".edc-canary-*"),
    )
    dist = build / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(dist), str(build)], check=True, timeout=120)
    (wheel,) = dist.glob("edc-*.whl")
    return wheel


# Runs in a worker whose `edc` is the installed wheel: probes it from a sandbox started there,
# once with the backend as it is and once with nothing masked, then runs the self-test.
INSTALLED_WORKER = """
import json, sys
from dataclasses import replace
from pathlib import Path
import edc
from edc.config import Settings
from edc.sandbox.base import SandboxSpec
from edc.sandbox.bwrap import BwrapSandbox
from edc.worker import canary

installed = Path(sys.argv[1])
assert Path(edc.__file__).resolve().is_relative_to(installed), edc.__file__

class Unmasked(BwrapSandbox):
    def layout(self):
        return replace(super().layout(), hidden_dirs=())

package = Path(edc.__file__).parent
task = package / "tasks" / "tiny"
ops = ["import:edc", f"read:{package / '__init__.py'}", f"read:{task / 'task.toml'}"]
ops += [f"list:{package}", f"list:{task}", f"list:{task / 'prompts'}"]
ops += [f"read:{p}" for p in sorted((task / "prompts").iterdir())]
# The installation's record: every file's name and hash.
ops += [f"read:{p}" for p in sorted(package.parent.glob("edc-*.dist-info/RECORD"))]
settings = Settings(data_dir=Path(sys.argv[2]))
reports = {}
for name, sandbox in (("fixed", BwrapSandbox.from_settings(settings)), ("unmasked", Unmasked())):
    result = sandbox.run(SandboxSpec(
        argv=(sandbox.python, "-c", sys.argv[4], *ops), submission_dir=Path(sys.argv[3]),
        memory_mb=512,
    ))
    assert result.ok, result
    reports[name] = json.loads(result.stdout.splitlines()[-1])
reports["canary"] = canary.check(settings, BwrapSandbox.from_settings(settings))
print(json.dumps(reports))
"""


@pytest.mark.parametrize("layout", ["prefix", "target"])
def test_a_platform_installed_under_usr_is_out_of_reach(
    bwrap_available: None, under_usr: Path, platform_wheel: Path, tmp_path: Path, layout: str
) -> None:
    # prefix: as `pip install` into /usr/local or a venv there (a site-packages folder);
    # target: a plain folder on PYTHONPATH, where only the package's own mask protects it.
    install = ["--prefix", str(under_usr)] if layout == "prefix" else ["--target", str(under_usr)]
    # --ignore-installed: else pip removes the venv's own (editable) edc before installing.
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed"]
    subprocess.run([*pip, "-q", *install, str(platform_wheel)], check=True, timeout=120)
    assert importlib.metadata.version("edc"), "the venv's own edc must stay installed"
    (package,) = under_usr.glob("**/edc/__init__.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDC_")}
    env["PYTHONPATH"] = str(package.parents[1])  # before the checkout's editable path
    submission = tmp_path / "submission"
    submission.mkdir()
    args = [str(under_usr), str(tmp_path / "data"), str(submission), PROBE]

    done = subprocess.run(
        [sys.executable, "-c", INSTALLED_WORKER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout.splitlines()[-1])
    leaks = {op: outcome for op, outcome in reports["fixed"].items() if reached(outcome)}
    assert leaks == {}
    assert reports["canary"] == []
    # Without the masks the same probe reads the installed task: the installation is in reach,
    # and the probe would see it.
    unmasked = reports["unmasked"]
    assert reached(unmasked[f"read:{package.parent / 'tasks' / 'tiny' / 'task.toml'}"])
    assert any(op.endswith(".dist-info/RECORD") for op in unmasked)


def test_the_self_test_passes_and_cleans_up(bwrap_available: None, tmp_path: Path) -> None:
    # A task directory of its own: other tests' workers check their sandboxes against the
    # bundled one, and may have a canary in it at any moment.
    task = quick_task(tmp_path / "task")
    settings = Settings(data_dir=tmp_path / "data", task_dir=task)

    assert canary.check(settings, BwrapSandbox.from_settings(settings)) == []

    leftovers = [*settings.data_dir.rglob(".edc-canary-*"), *settings.runs_dir.iterdir()]
    leftovers += list(task.glob(".edc-canary-*"))
    assert leftovers == []


def test_the_self_test_names_what_a_leaky_sandbox_exposes(
    bwrap_available: None, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    leaky = _Leaky(settings.data_dir.absolute(), PACKAGE_DIR)

    leaks = canary.check(settings, leaky)

    text = "; ".join(leaks)
    assert f"the data directory {settings.data_dir.absolute()}" in text
    assert "the data directory's file" in text
    assert f"the task directory {bundled_task_dir()}" in text
    assert f"the platform's code {Path(edc.__file__).resolve()}" in text
    assert "import edc" in text
    assert list(settings.data_dir.glob(".edc-canary-*")) == []


def test_the_worker_refuses_when_its_self_test_fails(
    bwrap_available: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("EDC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("EDC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDC_SANDBOX", "bwrap")
    canary.check_in_child()  # the real backend: passes

    # A child that cannot run its probe (no such sandbox image) fails the worker's start.
    monkeypatch.setenv("EDC_SANDBOX", "docker")
    monkeypatch.setenv("EDC_SANDBOX_IMAGE", f"edc-no-such-image:{uuid.uuid4().hex[:8]}")
    with pytest.raises(SandboxUnavailable, match="self-test failed"):
        canary.check_in_child()


def _track(settings: Settings, name: str, root: Path, runtime: str = "") -> Path:
    quick_task(root)
    if runtime:
        toml = root / "task.toml"
        toml.write_text(toml.read_text() + f"\n[runtime]\n{runtime}\n")
    with db.session_scope(settings) as session:
        add_track(session, settings, name=name, task_dir=root)
    return root


def test_every_tracks_task_directory_is_out_of_reach(
    bwrap_available: None, sqlite_settings: Settings, under_usr: Path
) -> None:
    """A track's task directory may be anywhere, /usr included: every run hides every track's,
    and the self-test probes them all (shown able to fail with a sandbox that hides none)."""
    secret_dir = _track(sqlite_settings, "usr", under_usr / "track")
    serving = canary.served(sqlite_settings)
    assert ("usr", secret_dir) in serving.track_dirs

    hidden = BwrapSandbox.from_settings(sqlite_settings, private_dirs=[secret_dir])
    assert canary.check(sqlite_settings, hidden, track_dirs=serving.track_dirs) == []
    blind = BwrapSandbox.from_settings(sqlite_settings)
    leaks = "; ".join(canary.check(sqlite_settings, blind, track_dirs=serving.track_dirs))
    assert f"track usr's task directory {secret_dir}" in leaks
    # What a worker's runs get: every track's directory, read from the database.
    assert secret_dir in track_dirs(sqlite_settings)
    assert list(secret_dir.glob(".edc-canary-*")) == []


def test_the_self_test_checks_each_runtime_of_the_workers_class(
    bwrap_available: None,
    sqlite_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A track of the worker's class promising a module its sandbox lacks keeps the worker from
    starting, naming the track; the same track on another class does not concern it."""
    promise = 'imports = ["numpy", "no_such_module_edc"]'
    broken = _track(sqlite_settings, "broken", tmp_path / "broken", promise)
    served = canary.served(sqlite_settings)
    assert list(served.runtimes.values()) == [["default"], ["broken"]]

    for key in [k for k in os.environ if k.startswith("EDC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("EDC_DATA_DIR", str(sqlite_settings.data_dir))
    monkeypatch.setenv("EDC_SANDBOX", "bwrap")
    with pytest.raises(SandboxUnavailable, match=r"Track broken: .*no_such_module_edc"):
        canary.check_in_child()

    toml = broken / "task.toml"
    toml.write_text(toml.read_text().replace('class = "cpu"', 'class = "h100"'))
    canary.check_in_child()  # not this worker's class: passes
