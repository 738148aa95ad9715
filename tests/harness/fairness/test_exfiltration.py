"""A failed hidden run tells the participant harness-known facts only: no text the submission
chose, so the prompts it was shown cannot come back through its own failure message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edc.config import Settings
from edc.status import FailureReason
from edc.tasks.task import Task
from edc.worker.evaluation import StageFailed, evaluate
from tests.harness.conftest import TaskFactory, write_native

# Answers the public check honestly enough to fail nothing before the hidden stage would begin:
# every prompt it is shown is recorded, then sent back inside an error, an id, or a bad line.
DUMP_PROMPTS = """\
import json
seen = []
send({{"op": "ready"}})
while True:
    message = receive()
    if message is None or message["op"] == "shutdown":
        break
    seen.append(bytes(message["prompt"]).decode("utf-8", "replace"))
    dump = "PROMPTS:" + "|".join(seen)
    {leak}
"""

LEAKS = {
    "unknown_id": 'send({"id": dump, "tokens": [1]})',
    "error_message": 'send({"op": "error", "message": dump})',
    "bad_line": 'send_raw((dump + "\\n").encode())',
    "bad_token": 'send({"id": message["id"], "tokens": [dump]})',
}


@pytest.fixture
def hidden_task(make_task: TaskFactory) -> Task:
    return make_task()


@pytest.mark.parametrize("leak", sorted(LEAKS))
def test_the_hidden_stage_never_echoes_what_the_submission_sent(
    leak: str, hidden_task: Task, sqlite_settings: Settings, tmp_path: Path
) -> None:
    settings = sqlite_settings.model_copy(
        update={"sandbox": "bwrap", "task_dir": hidden_task.root, "public_check": False}
    )
    submission = write_native(tmp_path / "sub", DUMP_PROMPTS.format(leak=LEAKS[leak]))
    with pytest.raises(StageFailed) as info:
        evaluate(
            settings,
            submission_dir=submission,
            run_dir=tmp_path / "run",
            labels={},
            worker_id="test",
        )
    failure = info.value
    assert failure.reason is FailureReason.PROTOCOL_ERROR or leak == "error_message"
    shown = failure.message + failure.public_logs
    assert "PROMPTS" not in shown, shown
    assert shown.startswith("On the hidden prompts: ") and "requests finished" in shown
    # The organisers still see the whole story.
    assert "PROMPTS:" in failure.logs


def test_the_public_check_may_quote_but_cuts_it_short(
    hidden_task: Task, sqlite_settings: Settings, tmp_path: Path
) -> None:
    settings = sqlite_settings.model_copy(update={"sandbox": "bwrap", "task_dir": hidden_task.root})
    submission = write_native(
        tmp_path / "sub", DUMP_PROMPTS.format(leak=LEAKS["error_message"]) + "\n"
    )
    with pytest.raises(StageFailed) as info:
        evaluate(
            settings, submission_dir=submission, run_dir=tmp_path / "run", labels={}, worker_id="t"
        )
    message = info.value.message
    assert message.startswith("On the public prompts: ") and "PROMPTS:" in message
    assert len(message) < 700
    json.dumps(message)  # a sentence, storable as is
