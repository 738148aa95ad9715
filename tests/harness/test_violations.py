"""Every way a submission can break the protocol ends the run with its reason and a sentence."""

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


def test_malformed_json(fails: Any) -> None:
    failure = fails(serve('send_raw(b"this is not json\\n")'))
    assert failure.reason is FailureReason.PROTOCOL_ERROR
    assert "not valid JSON" in failure.message


def test_unknown_request_id(fails: Any) -> None:
    failure = fails(serve('send({"id": "nobody-asked", "tokens": [1]})'))
    assert failure.reason is FailureReason.PROTOCOL_ERROR
    assert "unknown request id 'nobody-asked'" in failure.message


def test_too_many_tokens(fails: Any) -> None:
    failure = fails(serve('send({"id": rid, "tokens": [65] * (n + 1), "done": True})'))
    assert failure.reason is FailureReason.PROTOCOL_ERROR
    assert "got 9 tokens; exactly 8 were asked for" in failure.message


def test_too_few_tokens(fails: Any) -> None:
    failure = fails(serve('send({"id": rid, "tokens": [65]})\nsend({"id": rid, "done": True})'))
    assert failure.reason is FailureReason.PROTOCOL_ERROR
    assert "done after 1 tokens; exactly 8 were asked for" in failure.message


def test_tokens_after_done(fails: Any) -> None:
    failure = fails(
        serve(
            'send({"id": rid, "tokens": [65] * n, "done": True})\nsend({"id": rid, "tokens": [1]})'
        )
    )
    assert failure.reason is FailureReason.PROTOCOL_ERROR
    assert "after it was done" in failure.message


def test_out_of_vocabulary(fails: Any) -> None:
    failure = fails(serve('send({"id": rid, "tokens": [256]})'))
    assert failure.reason is FailureReason.PROTOCOL_ERROR
    assert "token 256" in failure.message and "0 to 255" in failure.message


def test_tokens_before_ready(fails: Any) -> None:
    failure = fails('send({"id": "x", "tokens": [1]})\ntime.sleep(30)')
    assert failure.reason is FailureReason.PROTOCOL_ERROR
    assert "before it was ready" in failure.message


def test_silence_is_a_run_timeout(fails: Any, make_task: TaskFactory) -> None:
    failure = fails(serve("time.sleep(60)"), make_task(run_timeout_s=1.5))
    assert failure.reason is FailureReason.RUN_TIMEOUT
    assert "1.5 s" in failure.message


def test_never_ready_is_a_load_timeout(fails: Any, make_task: TaskFactory) -> None:
    failure = fails("time.sleep(60)", make_task(load_timeout_s=1.5))
    assert failure.reason is FailureReason.LOAD_TIMEOUT
    assert "ready within the load timeout of 1.5 s" in failure.message


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


def test_a_crash_mid_run(fails: Any) -> None:
    failure = fails(serve("sys.stderr.write('giving up now\\n')\nsys.exit(3)"))
    assert failure.reason is FailureReason.CRASHED
    assert "exited with code 3" in failure.message
    assert "giving up now" in failure.logs


def test_an_exception_in_the_decoder_is_a_crash_with_its_traceback(
    bwrap_sandbox: Sandbox, small_task: Task, harness_settings: Settings, tmp_path: Path
) -> None:
    submission = write_python(
        tmp_path / "sub",
        """
        class Decoder:
            def __init__(self, model_dir):
                pass

            def step(self, requests):
                raise ValueError("the cache exploded")
        """,
    )
    failure = failure_of(submission, small_task, harness_settings, bwrap_sandbox, tmp_path)
    assert failure.reason is FailureReason.CRASHED
    assert "ValueError: the cache exploded" in failure.message
    assert "Traceback" in failure.logs


def test_a_missing_decoder_class_is_a_crash_at_load(
    bwrap_sandbox: Sandbox, small_task: Task, harness_settings: Settings, tmp_path: Path
) -> None:
    submission = write_python(tmp_path / "sub", "class Decodr:\n    pass\n")
    failure = failure_of(submission, small_task, harness_settings, bwrap_sandbox, tmp_path)
    assert failure.reason is FailureReason.CRASHED
    assert "no class named 'Decoder'" in failure.message


def test_exceeding_memory_is_a_memory_limit(
    bwrap_sandbox: Sandbox, make_task: TaskFactory, harness_settings: Settings, tmp_path: Path
) -> None:
    submission = write_python(
        tmp_path / "sub",
        """
        class Decoder:
            def __init__(self, model_dir):
                self.hog = [bytearray(64 * 1024 * 1024) for _ in range(16)]

            def step(self, requests):
                return []
        """,
    )
    task = make_task(memory_mb=256)
    failure = failure_of(submission, task, harness_settings, bwrap_sandbox, tmp_path)
    assert failure.reason is FailureReason.MEMORY_LIMIT
    assert "memory" in failure.message


def test_closing_the_channel_early_is_a_protocol_error(fails: Any) -> None:
    failure = fails(serve("sock.close()\nbreak"))
    assert failure.reason is FailureReason.PROTOCOL_ERROR
    assert "closed the channel too early" in failure.message


def test_no_entry_point(
    bwrap_sandbox: Sandbox, small_task: Task, harness_settings: Settings, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("nothing to run\n")
    failure = failure_of(empty, small_task, harness_settings, bwrap_sandbox, tmp_path)
    assert failure.reason is FailureReason.INVALID_ARCHIVE


def test_a_numpy_allocation_failure_is_a_memory_limit(
    bwrap_sandbox: Sandbox, small_task: Task, harness_settings: Settings, tmp_path: Path
) -> None:
    # A terabyte is refused at once, by the limits or by the kernel: numpy raises its own
    # MemoryError subclass, which the shim reports as a MemoryError.
    submission = write_python(
        tmp_path / "sub",
        """
        import numpy as np

        class Decoder:
            def __init__(self, model_dir):
                self.table = np.ones(1 << 40, dtype=np.uint8)

            def step(self, requests):
                return []
        """,
    )
    failure = failure_of(submission, small_task, harness_settings, bwrap_sandbox, tmp_path)
    assert failure.reason is FailureReason.MEMORY_LIMIT
    assert "MemoryError" in failure.message
