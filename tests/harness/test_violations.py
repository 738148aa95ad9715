"""Every way a submission can break the protocol ends the run with its reason and a sentence."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edc.config import Settings
from edc.errors import RunFailed
from edc.harness.evaluate import evaluate_submission
from edc.sandbox.base import Sandbox
from edc.status import FailureReason
from edc.tasks.task import Task

from .conftest import TaskFactory, write_native, write_python

# After ready: answer each generate through ``answer(message)``; stop at shutdown.
SERVE = """\
send({{"op": "ready"}})
while True:
    message = receive()
    if message is None or message["op"] == "shutdown":
        break
    n = message["max_new_tokens"]
    rid = message["id"]
{answer}
"""


def serve(answer: str) -> str:
    return SERVE.format(answer="\n".join("    " + line for line in answer.strip().splitlines()))


def failure_of(
    submission: Path, task: Task, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> RunFailed:
    with pytest.raises(RunFailed) as info:
        evaluate_submission(
            settings=settings,
            sandbox=sandbox,
            submission_dir=submission,
            task=task,
            run_dir=tmp_path / "run",
        )
    failure = info.value
    assert failure.message.strip().endswith("."), failure.message
    return failure


@pytest.fixture
def fails(
    bwrap_sandbox: Sandbox, small_task: Task, harness_settings: Settings, tmp_path: Path
) -> Any:
    def run(body: str, task: Task | None = None) -> RunFailed:
        submission = write_native(tmp_path / "sub", body)
        return failure_of(submission, task or small_task, harness_settings, bwrap_sandbox, tmp_path)

    return run


@dataclass(frozen=True)
class Break:
    """A native submission's body, and the failure it must end in."""

    body: str
    reason: FailureReason
    says: tuple[str, ...]  # fragments of the participant's sentence
    task: dict[str, Any] = field(default_factory=dict)  # overrides of the small task
    logs: str = ""  # a fragment of the captured output


PROTOCOL = FailureReason.PROTOCOL_ERROR
BREAKS = {
    "malformed JSON": Break(
        serve('send_raw(b"this is not json\\n")'), PROTOCOL, ("not valid JSON",)
    ),
    "an unknown request id": Break(
        serve('send({"id": "nobody-asked", "tokens": [1]})'),
        PROTOCOL,
        ("unknown request id 'nobody-asked'",),
    ),
    "too many tokens": Break(
        serve('send({"id": rid, "tokens": [65] * (n + 1), "done": True})'),
        PROTOCOL,
        ("got 9 tokens; exactly 8 were asked for",),
    ),
    "too few tokens": Break(
        serve('send({"id": rid, "tokens": [65]})\nsend({"id": rid, "done": True})'),
        PROTOCOL,
        ("done after 1 tokens; exactly 8 were asked for",),
    ),
    "tokens after done": Break(
        serve(
            'send({"id": rid, "tokens": [65] * n, "done": True})\nsend({"id": rid, "tokens": [1]})'
        ),
        PROTOCOL,
        ("after it was done",),
    ),
    "a token out of the vocabulary": Break(
        serve('send({"id": rid, "tokens": [256]})'), PROTOCOL, ("token 256", "0 to 255")
    ),
    "tokens before ready": Break(
        'send({"id": "x", "tokens": [1]})\ntime.sleep(30)', PROTOCOL, ("before it was ready",)
    ),
    "closing the channel early": Break(
        serve("sock.close()\nbreak"), PROTOCOL, ("closed the channel too early",)
    ),
    "silence after a request": Break(
        serve("time.sleep(60)"),
        FailureReason.RUN_TIMEOUT,
        ("1.5 s",),
        task={"run_timeout_s": 1.5},
    ),
    "never ready": Break(
        "time.sleep(60)",
        FailureReason.LOAD_TIMEOUT,
        ("ready within the load timeout of 1.5 s",),
        task={"load_timeout_s": 1.5},
    ),
    "a crash mid-run": Break(
        serve("sys.stderr.write('giving up now\\n')\nsys.exit(3)"),
        FailureReason.CRASHED,
        ("exited with code 3",),
        logs="giving up now",
    ),
}


@pytest.mark.parametrize("case", BREAKS.values(), ids=BREAKS.keys())
def test_a_native_submission_breaking_the_protocol(
    case: Break, fails: Any, make_task: TaskFactory
) -> None:
    failure = fails(case.body, make_task(**case.task) if case.task else None)
    assert failure.reason is case.reason
    for fragment in case.says:
        assert fragment in failure.message
    assert case.logs in failure.logs


# Python decoders (the shim's ``Decoder`` class) that fail while loading or stepping.
DECODERS = {
    "an exception in the decoder": Break(
        """
        class Decoder:
            def __init__(self, model_dir):
                pass

            def step(self, requests):
                raise ValueError("the cache exploded")
        """,
        FailureReason.CRASHED,
        ("ValueError: the cache exploded",),
        logs="Traceback",
    ),
    "a missing Decoder class": Break(
        "class Decodr:\n    pass\n", FailureReason.CRASHED, ("no class named 'Decoder'",)
    ),
    "exceeding the memory limit": Break(
        """
        class Decoder:
            def __init__(self, model_dir):
                self.hog = [bytearray(64 * 1024 * 1024) for _ in range(16)]

            def step(self, requests):
                return []
        """,
        FailureReason.MEMORY_LIMIT,
        ("memory",),
        task={"memory_mb": 256},
    ),
    # A terabyte is refused at once, by the limits or by the kernel: numpy raises its own
    # MemoryError subclass, which the shim reports as a MemoryError.
    "a numpy allocation failure": Break(
        """
        import numpy as np

        class Decoder:
            def __init__(self, model_dir):
                self.table = np.ones(1 << 40, dtype=np.uint8)

            def step(self, requests):
                return []
        """,
        FailureReason.MEMORY_LIMIT,
        ("MemoryError",),
    ),
}


@pytest.mark.parametrize("case", DECODERS.values(), ids=DECODERS.keys())
def test_a_python_decoder_failing(
    case: Break,
    bwrap_sandbox: Sandbox,
    make_task: TaskFactory,
    harness_settings: Settings,
    tmp_path: Path,
) -> None:
    submission = write_python(tmp_path / "sub", case.body)
    task = make_task(**case.task)
    failure = failure_of(submission, task, harness_settings, bwrap_sandbox, tmp_path)
    assert failure.reason is case.reason
    for fragment in case.says:
        assert fragment in failure.message
    assert case.logs in failure.logs


def test_never_connecting_is_a_load_timeout(
    bwrap_sandbox: Sandbox, make_task: TaskFactory, harness_settings: Settings, tmp_path: Path
) -> None:
    submission = write_python(tmp_path / "sub", "import time\ntime.sleep(60)\n")
    (submission / "submission.py").unlink()
    run = submission / "run"
    run.write_text("#!/bin/sh\nsleep 60\n")
    run.chmod(0o755)
    failure = failure_of(
        submission, make_task(load_timeout_s=1.5), harness_settings, bwrap_sandbox, tmp_path
    )
    assert failure.reason is FailureReason.LOAD_TIMEOUT
    assert "did not connect" in failure.message


def test_no_entry_point(
    bwrap_sandbox: Sandbox, small_task: Task, harness_settings: Settings, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("nothing to run\n")
    failure = failure_of(empty, small_task, harness_settings, bwrap_sandbox, tmp_path)
    assert failure.reason is FailureReason.INVALID_ARCHIVE
