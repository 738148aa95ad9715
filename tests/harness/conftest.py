"""Fixtures for the decode harness: a small task built on the bundled model, the real bwrap sandbox,
and helpers that write submissions speaking the protocol directly (a ``run`` executable)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edc.config import Settings
from edc.sandbox.backends import choose_sandbox
from edc.sandbox.base import Sandbox
from edc.tasks.task import Task, bundled_task_dir

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

# Small enough that a whole evaluation takes about a second on two cores.
SMALL_TASK = {
    "max_new_tokens": 8,
    "warmup": 1,
    "timed": 2,
    "throughput": 3,
    "repeats": 2,
    "load_timeout_s": 20.0,
    "run_timeout_s": 60.0,
    "memory_mb": 1024,
    "cpus": 1.0,
}

TASK_TOML = """\
name = "harness-test"
version = "1"

[model]
dir = "model"
vocab_size = 256

[decode]
max_new_tokens = {max_new_tokens}
epsilon = 0.05

[sampling]
rule = "gumbel"
temperature = 0.8
seed = 20261128

[requests]
warmup = {warmup}
timed = {timed}
throughput = {throughput}
repeats = {repeats}

[limits]
load_timeout_s = {load_timeout_s}
run_timeout_s = {run_timeout_s}
memory_mb = {memory_mb}
pids = 128
cpus = {cpus}

[ranking]
metric = "latency.e2e_per_token_ms.p50"
direction = "lower"
"""

TaskFactory = Callable[..., Task]


@pytest.fixture(scope="session")
def bwrap_sandbox() -> Sandbox:
    """The real bubblewrap backend; these tests never run a submission unconfined."""
    return choose_sandbox(Settings(sandbox="bwrap"))


@pytest.fixture
def harness_settings(tmp_path: Path) -> Settings:
    return Settings(sandbox="bwrap", data_dir=tmp_path / "data")


# A [serving] section of one round: four requests of 3 to 5 tokens at 20 requests/s, judged
# loosely. The task's other requests ask for max_new_tokens (8 in the small tasks), so a submission
# knows a serving request by its shorter length.
ONE_SERVING_ROUND = """
[serving]
rates = [20.0]
requests_per_rate = 4
ttft_slo_ms = 1000
tpot_slo_ms = 100
target_share = 0.5
refine_steps = 0
confirm = 0
output_tokens = [3, 5]
"""


def write_task(
    root: Path,
    *,
    hidden: list[dict[str, Any]] | None = None,
    extra_toml: str = "",
    **overrides: Any,
) -> Task:
    """A task directory on the bundled model, with the bundled prompts unless told otherwise;
    ``extra_toml`` adds sections (a ``[serving]`` one, say)."""
    values = {**SMALL_TASK, **overrides}
    root.mkdir(parents=True)
    (root / "task.toml").write_text(TASK_TOML.format(**values) + extra_toml)
    (root / "model").symlink_to(bundled_task_dir() / "model")
    prompts = root / "prompts"
    prompts.mkdir()
    bundled = bundled_task_dir() / "prompts"
    (prompts / "public.jsonl").write_text((bundled / "public.jsonl").read_text())
    if hidden is None:
        # The bundled task ships no hidden prompts: test tasks hide the public ones, renamed.
        public = [json.loads(line) for line in (bundled / "public.jsonl").read_text().splitlines()]
        rows = [{"id": f"hid-{i:03d}", "text": r["text"]} for i, r in enumerate(reversed(public))]
        (prompts / "hidden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        (prompts / "hidden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hidden))
    return Task.load(root)


@pytest.fixture
def make_task(tmp_path: Path) -> TaskFactory:
    counter = iter(range(1000))

    def make(**overrides: Any) -> Task:
        return write_task(tmp_path / f"task{next(counter)}", **overrides)

    return make


@pytest.fixture
def small_task(make_task: TaskFactory) -> Task:
    return make_task()


# A submission in "any language": a script run directly as /submission/run. It uses the
# interpreter the sandbox binds (the platform's own), with only the standard library.
NATIVE_PRELUDE = """\
import json, os, socket, sys, time

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["EDC_SOCKET"])
reader = sock.makefile("rb")


def send(obj):
    sock.sendall((json.dumps(obj) + "\\n").encode())


def send_raw(data):
    sock.sendall(data)


def receive():
    line = reader.readline()
    return json.loads(line) if line else None


load = receive()
"""


def write_native(directory: Path, body: str, *, extra_files: dict[str, str] | None = None) -> Path:
    """A submission directory whose executable ``run`` is the prelude followed by ``body``."""
    directory.mkdir(parents=True, exist_ok=True)
    run = directory / "run"
    run.write_text(f"#!{sys.executable}\n{NATIVE_PRELUDE}\n{textwrap.dedent(body)}")
    run.chmod(0o755)
    for name, text in (extra_files or {}).items():
        (directory / name).write_text(text)
    return directory


def serial_sleeper(first_delay_s: float, step_s: float) -> str:
    """A native body serving one request at a time: ``first_delay_s`` before its first token,
    ``step_s`` before each further one, every token in its own chunk."""
    return f"""\
send({{"op": "ready"}})
while True:
    message = receive()
    if message is None or message["op"] == "shutdown":
        break
    time.sleep({first_delay_s})
    for i in range(message["max_new_tokens"]):
        if i:
            time.sleep({step_s})
        send({{"id": message["id"], "tokens": [65]}})
    send({{"id": message["id"], "done": True}})
"""


def write_python(directory: Path, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "submission.py").write_text(textwrap.dedent(source))
    return directory


def example_source(name: str) -> str:
    return (EXAMPLES / name / "submission.py").read_text()


@pytest.fixture
def submission_dir(tmp_path: Path) -> Path:
    path = tmp_path / "submission"
    assert not path.exists()
    return path


def executable(path: Path) -> bool:
    return os.access(path, os.X_OK)
