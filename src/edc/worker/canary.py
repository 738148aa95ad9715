"""Start-up self-test: a worker takes no job before a real sandbox shows it the platform is out of
reach.

The worker writes a canary (a file named and filled at random) into its data directories and,
where it may write there, into the task directory; where it may not, an existing task file
(``task.toml``) stands in. Then one sandbox of the worker's own backend runs a probe that tries
to read each of them, to list their folders, to read the platform package's ``__init__.py`` and to
``import edc``, and checks that every module the task's runtime promises does import. It does so
once for each runtime of the tracks of the worker's class (each track's task directory probed
too, as every run hides them all). Whatever of the platform the probe reaches is a leak: the worker
names it and refuses to start (as it does when a promised module is missing, naming the track).
The canaries are removed afterwards, whatever happened.

Like the drift check, the probe runs from a child process (``python -m edc.worker.canary``): the
worker process never starts a sandbox itself.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import edc
from edc import db
from edc.config import Settings, get_settings
from edc.errors import EdcError, SandboxUnavailable
from edc.models import DEFAULT_TRACK
from edc.sandbox.backends import choose_sandbox
from edc.sandbox.base import Sandbox, SandboxSpec
from edc.sandbox.runtime import REQUIRED_IMPORTS, DecoderRuntime
from edc.services.tracks import list_tracks
from edc.tasks.task import TASK_FILE, bundled_task_dir, load_task, worker_class

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 180  # the probe, and importing what the runtime promises from a cold cache
PROBE_TIMEOUT_S = 120.0
CANARY_PREFIX = ".edc-canary-"
# Each argument is "<op>:<subject>"; the probe answers, for each, whether it succeeded.
PROBE = """
import json, os, sys
def attempt(op, subject):
    try:
        if op == "read":
            with open(subject, "rb") as f:
                f.read(1)
            return True
        if op == "list":
            return bool(os.listdir(subject))
        __import__(subject)
        return True
    except (OSError, ImportError):
        return False
print(json.dumps({arg: attempt(*arg.split(":", 1)) for arg in sys.argv[1:]}))
"""


@dataclass(frozen=True)
class Probe:
    """One thing the probe tries inside the sandbox, and what it means if it succeeds."""

    op: str  # "read" (a file), "list" (a folder: succeeds if it shows entries) or "import"
    subject: str  # a host path (the same path inside, where it leaks) or a module name
    leaked: str  # names what leaked when it succeeds

    @property
    def arg(self) -> str:
        return f"{self.op}:{self.subject}"


def check(
    settings: Settings,
    sandbox: Sandbox,
    promised: tuple[str, ...] = REQUIRED_IMPORTS,
    track_dirs: Sequence[tuple[str, Path]] = (),
) -> list[str]:
    """What of the platform a run in ``sandbox`` reaches (empty: nothing); one sandbox start.
    ``track_dirs`` (track name, task directory) are probed like the configured task's.

    Raises SandboxUnavailable when the probe cannot run or a ``promised`` module (what the task's
    runtime offers decoders) does not import.
    """
    token = secrets.token_hex(8)
    canaries: list[Path] = []
    # Under the data directory: a Docker engine binds host paths, and that one it shares.
    probe_dir = settings.runs_dir.absolute() / f"canary-{token}"
    try:
        probes = _plant(settings, token, canaries, track_dirs)
        probe_dir.mkdir(parents=True)
        probe_dir.chmod(0o755)
        imports = [f"import:{name}" for name in promised]
        spec = SandboxSpec(
            argv=(sandbox.python, "-c", PROBE, *[p.arg for p in probes], *imports),
            submission_dir=probe_dir,
            env={"PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1"},
            wall_timeout_s=PROBE_TIMEOUT_S,
            memory_mb=4096,  # a promised torch alone takes a few hundred MB to import
            labels={"stage": "canary"},
        )
        result = sandbox.run(spec)
    finally:
        for canary in canaries:
            canary.unlink(missing_ok=True)
        shutil.rmtree(probe_dir, ignore_errors=True)
    try:
        answers = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise SandboxUnavailable(
            f"The sandbox self-test could not run ({result.exit_kind}, exit {result.exit_code}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        ) from exc
    missing = [name for name in promised if not answers.get(f"import:{name}")]
    if missing:
        raise SandboxUnavailable(
            f"The task promises decoders {', '.join(missing)}, which cannot be imported inside "
            f"the sandbox ({sandbox.identity()}); build the task's runtime (`edc env build`, "
            "`edc task check` tells what it lacks)."
        )
    return [p.leaked for p in probes if answers.get(p.arg)]


def _plant(
    settings: Settings,
    token: str,
    canaries: list[Path],
    track_dirs: Sequence[tuple[str, Path]] = (),
) -> list[Probe]:
    """Write the canaries (each added to ``canaries`` at once, for the clean-up) and say what
    to probe."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    task_dir = settings.task_dir if settings.task_dir is not None else bundled_task_dir()
    # (what, folder, the file that stands in for a canary where none can be written)
    folders: list[tuple[str, Path, str | None]] = [("data directory", settings.data_dir, None)]
    if settings.shared_data_dir is not None:
        folders.append(("shared data directory", settings.shared_data_dir, None))
    folders.append(("task directory", task_dir, TASK_FILE))
    for name, track_dir in track_dirs:
        if track_dir.absolute() != task_dir.absolute():
            folders.append((f"track {name}'s task directory", track_dir, TASK_FILE))
    probes: list[Probe] = []
    for what, raw, stand_in in folders:
        folder = raw.absolute()
        probes.append(Probe("list", str(folder), f"the {what} {folder}"))
        canary = folder / f"{CANARY_PREFIX}{token}"
        try:
            canary.write_text(secrets.token_hex(16))
            canaries.append(canary)
            # Readable by anyone: the probe tests what is visible, not the file's mode.
            canary.chmod(0o644)
        except OSError:
            if stand_in is None:
                continue
            canary = folder / stand_in
        probes.append(Probe("read", str(canary), f"the {what}'s file {canary}"))
    package = Path(edc.__file__).resolve()
    probes.append(Probe("read", str(package), f"the platform's code {package}"))
    probes.append(Probe("import", "edc", "the platform package (import edc)"))
    return probes


def check_in_child() -> None:
    """The worker's side: run :func:`check` in a child with the worker's settings; raises
    SandboxUnavailable, saying what leaked, unless the sandbox keeps the platform out."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edc.worker.canary"],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailable(f"The sandbox self-test could not run: {exc}.") from exc
    if done.returncode != 0:
        message = done.stderr.strip()[-2000:] or f"it exited with {done.returncode}"
        log.error("sandbox self-test failed: %s", message)
        raise SandboxUnavailable(f"The sandbox self-test failed: {message}")
    log.info("sandbox self-test passed: nothing of the platform is visible inside")


@dataclass(frozen=True)
class Served:
    """What a worker must prove before its first job: the runtimes of the tracks of its class
    (the configured task's always), and every track's task directory it must not show."""

    runtimes: dict[DecoderRuntime, list[str]]  # each runtime, and the tracks that promise it
    track_dirs: list[tuple[str, Path]]


def served(settings: Settings) -> Served:
    task = load_task(settings)
    runtimes: dict[DecoderRuntime, list[str]] = {task.runtime: [DEFAULT_TRACK]}
    try:
        with db.database_errors(), db.session_scope(settings) as session:
            tracks = list_tracks(session, settings)
    except EdcError as exc:
        # Each run still hides every track (it reads them itself); here only the configured
        # task can be proven.
        log.warning("sandbox self-test: the tracks cannot be read (%s)", exc.message)
        return Served(runtimes, [])
    mine = worker_class(settings, task)
    for track in tracks:
        if track.is_default:
            continue
        other = track.task()
        if other.spec.hardware.kind == mine:
            runtimes.setdefault(other.runtime, []).append(track.name)
    return Served(runtimes, [(track.name, track.task_dir) for track in tracks])


def main() -> None:
    """The child process: exit 0 when nothing leaks and every runtime offers what it promises,
    else 1 with the reasons on stderr."""
    settings = get_settings()
    try:
        serving = served(settings)
        private = [folder for _, folder in serving.track_dirs]
        leaks: list[str] = []
        for runtime, names in serving.runtimes.items():
            sandbox = choose_sandbox(settings, runtime, private_dirs=private)
            try:
                leaks += check(settings, sandbox, runtime.imports, serving.track_dirs)
            except SandboxUnavailable as exc:
                raise SandboxUnavailable(f"Track {', '.join(names)}: {exc.message}") from exc
    except EdcError as exc:
        print(exc.message, file=sys.stderr)  # noqa: T201 - the parent reads it
        sys.exit(1)
    if leaks:
        print(  # noqa: T201 - the parent reads it
            "The sandbox exposes the platform, so no submission will run here. Reachable "
            f"inside: {'; '.join(sorted(set(leaks)))}.",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
