"""The decoder's runtime: what a submission can import besides the standard library.

The task chooses it (``[runtime]`` in task.toml); each backend provides it its own way::

    runtime = DecoderRuntime(imports=("numpy", "torch"), env_dir=Path("/srv/edc/envs/torch"))
    sandbox = choose_sandbox(settings, runtime)        # bwrap binds the environment's packages
    found = probe_imports(sandbox, runtime.imports)    # {"torch": "2.13.0", "numpy": "2.4.6"}

- **bwrap**: ``env_dir`` is a folder the organiser built (``edc env build``): a venv or prefix
  for the worker's Python version, or a flat ``pip install --target`` folder. Its packages alone
  are bound read-only on the sandbox's ``PYTHONPATH``, never the worker's own environment. With no
  ``env_dir``, the worker's numpy is bound and nothing else.
- **docker**: ``image`` names the image runs start from; without it, ``EDC_SANDBOX_IMAGE``.

``imports`` is the task's promise to participants. It always holds numpy, which the
``edc_participant`` helper every sandbox offers is written in. A worker whose sandbox cannot
import every promised module refuses to take jobs (its start-up self-test), and ``edc task check``
says which module is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edc.errors import SandboxUnavailable
from edc.sandbox.base import Sandbox, SandboxSpec

# The participant helper (``edc_participant``) imports numpy, so every runtime must offer it.
REQUIRED_IMPORTS = ("numpy",)
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
PROBE_TIMEOUT_S = 120.0
# Prints, for each module named, its version (or "" when it has none) or the import's error.
_PROBE = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
        found[name] = {"version": str(getattr(module, "__version__", ""))}
    except BaseException as exc:
        found[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
print(json.dumps(found))
"""


@dataclass(frozen=True)
class DecoderRuntime:
    """What a decoder may import, and where each backend finds it."""

    imports: tuple[str, ...] = REQUIRED_IMPORTS
    env_dir: Path | None = None  # bwrap: the environment whose packages are bound
    image: str | None = None  # docker: the image runs start from

    def describe(self) -> str:
        where = [f"environment {self.env_dir}"] if self.env_dir else []
        where += [f"image {self.image}"] if self.image else []
        return f"{', '.join(self.imports)} ({'; '.join(where) or 'the worker default'})"


DEFAULT_RUNTIME = DecoderRuntime()


def site_packages(env_dir: Path) -> Path:
    """The folder of ``env_dir`` that holds its packages, for this interpreter's version.

    A venv or prefix keeps them in ``lib/pythonX.Y/site-packages``; a ``pip install --target``
    folder is that folder itself. Raises SandboxUnavailable when the environment is missing or
    built for another Python (its compiled packages would not load).
    """
    if not env_dir.is_dir():
        raise SandboxUnavailable(
            f"The task's runtime environment {env_dir} does not exist on this worker; build it "
            f"with `edc env build {env_dir}`."
        )
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    built_for = sorted(p.parent.name for p in env_dir.glob("lib/python3*/site-packages"))
    if (env_dir / "pyvenv.cfg").is_file() or built_for:
        folder = env_dir / "lib" / version / "site-packages"
        if not folder.is_dir():
            raise SandboxUnavailable(
                f"The task's runtime environment {env_dir} holds packages for "
                f"{', '.join(built_for) or 'no Python'}, but submissions run with {version}; "
                "rebuild it with the worker's interpreter."
            )
        return folder
    return env_dir


def probe_imports(sandbox: Sandbox, modules: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Import each module inside one run of ``sandbox``: {name: {"version"} or {"error"}}."""
    with tempfile.TemporaryDirectory(prefix="edc-runtime-probe-") as folder:
        Path(folder).chmod(0o755)
        spec = SandboxSpec(
            argv=(sandbox.python, "-c", _PROBE, *modules),
            submission_dir=Path(folder),
            env={"PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"},
            wall_timeout_s=PROBE_TIMEOUT_S,
            memory_mb=4096,
            pids_max=256,
            labels={"stage": "runtime-probe"},
        )
        result = sandbox.run(spec)
    try:
        found: dict[str, dict[str, str]] = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise SandboxUnavailable(
            f"The runtime probe could not run ({result.exit_kind}, exit {result.exit_code}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        ) from exc
    return found


def missing_imports(found: dict[str, dict[str, str]], modules: tuple[str, ...]) -> list[str]:
    """'name (why)' for each promised module the probe could not import."""
    return [
        f"{name} ({found.get(name, {}).get('error', 'not probed')})"
        for name in modules
        if "version" not in found.get(name, {})
    ]


def build_environment(
    env_dir: Path, requirements: tuple[str, ...], *, echo: Callable[[str], None] = print
) -> Path:
    """Make ``env_dir`` a venv of the worker's interpreter holding ``requirements`` (pip
    specifiers) and numpy at the worker's version unless they name one; returns its package
    folder. Built beside it and moved into place at the end, so an interrupted build leaves no
    half environment. Raises SandboxUnavailable when the folder is taken or pip fails."""
    if env_dir.exists() and (not env_dir.is_dir() or any(env_dir.iterdir())):
        raise SandboxUnavailable(f"{env_dir} exists and is not empty; choose a new folder.")
    wanted = list(requirements)
    if not any(_project_name(r) == "numpy" for r in wanted):
        import numpy

        wanted.insert(0, f"numpy=={numpy.__version__}")
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{env_dir.name}-building-", dir=env_dir.parent))
    steps = [
        [sys.executable, "-m", "venv", "--without-pip", str(building)],
        # The worker's pip installs into the new environment: no pip of its own inside it.
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--ignore-installed",
            "--prefix",
            str(building),
            *wanted,
        ],
    ]
    try:
        for argv in steps:
            echo(" ".join(argv))
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SandboxUnavailable(
                    f"Building the environment failed ({' '.join(argv[2:4])}, exit "
                    f"{done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}"
                )
        # Only its packages are ever used (bound into sandboxes), so the scripts in bin/ that
        # name the building folder do not matter.
        if env_dir.exists():
            env_dir.rmdir()  # empty, checked above
        building.rename(env_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return site_packages(env_dir)


def _project_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()
