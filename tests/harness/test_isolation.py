"""What the sandbox can see, and submissions that speak the protocol without the shim."""

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from edc.config import Settings
from edc.errors import RunFailed
from edc.harness import participant
from edc.harness.evaluate import evaluate_submission
from edc.sandbox.base import Sandbox
from edc.tasks.task import bundled_task_dir

from .conftest import TaskFactory, example_source, write_native

# Split so that this file, copied nowhere, still never contains the whole marker.
MARKER_PARTS = ("EDC-HIDDEN-", "MARKER-7f3a")
HIDDEN = [
    {"id": f"secret-{i}", "text": f"# {''.join(MARKER_PARTS)} line {i}\nimport os\n"}
    for i in range(8)
]

SCANNER = """\
import hashlib

MARKER = "".join({marker_parts!r}).encode()
NAMES = {names!r}
HASHES = {hashes!r}
report = {{"files": 0, "read": 0, "names": [], "content": [], "copies": [],
          "saw_model_config": False, "saw_self": False, "read_model_config": False}}
for top, dirs, files in os.walk("/"):
    if top in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(top, name)
        report["files"] += 1
        if name in NAMES or name.startswith("harness-test-v"):
            report["names"].append(path)
        report["saw_model_config"] |= path == "/model/config.json"
        report["saw_self"] |= path == "/submission/run"
        if top.startswith("/usr") or "site-packages" in top or "/lib/python3" in top:
            continue
        try:
            if not os.path.isfile(path) or os.path.getsize(path) > 4 << 20:
                continue
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        report["read"] += 1
        if MARKER in data:
            report["content"].append(path)
        if hashlib.sha256(data).hexdigest() in HASHES:
            report["copies"].append(path)
        report["read_model_config"] |= path == "/model/config.json" and b"vocab_size" in data
sys.stdout.write("SCAN " + json.dumps(report) + "\\n")
"""


def test_hidden_prompts_and_reference_outputs_are_nowhere_in_the_sandbox(
    bwrap_sandbox: Sandbox, make_task: TaskFactory, harness_settings: Settings, tmp_path: Path
) -> None:
    task = make_task(hidden=HIDDEN)
    # No reference decodes are kept on disk any more (each evaluation has its own secret seed);
    # the organiser's hidden prompt file is the secret left on the worker's disk.
    assert not bundled_task_dir().joinpath("prompts/hidden.jsonl").exists()
    secrets = [task.hidden_prompts_path]
    hashes = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in secrets)
    names = sorted({"hidden.jsonl", "public.jsonl", "task.toml", *(p.name for p in secrets)})
    scanner = write_native(
        tmp_path / "scanner",
        SCANNER.format(marker_parts=MARKER_PARTS, names=names, hashes=hashes),
    )
    with pytest.raises(RunFailed) as info:
        evaluate_submission(
            settings=harness_settings,
            sandbox=bwrap_sandbox,
            submission_dir=scanner,
            task=task,
            run_dir=tmp_path / "second",
        )
    line = next(x for x in info.value.logs.splitlines() if x.startswith("SCAN "))
    report: dict[str, Any] = json.loads(line.removeprefix("SCAN "))
    # The scan itself worked: it walked the whole tree and read what it was allowed to read.
    assert report["saw_model_config"] and report["saw_self"] and report["read_model_config"]
    assert report["files"] > 1000
    # And found nothing of the task's secrets: no prompts file, no reference decodes, no copy.
    assert report["names"] == []
    assert report["content"] == []
    assert report["copies"] == []


NATIVE_DECODER = """\
sys.path.insert(0, "/submission")
from kv import Llama
from edc_participant import Sampler

model = Llama(load["model_dir"])
send({"op": "ready", "version": 1})
while True:
    message = receive()
    if message is None or message["op"] == "shutdown":
        break
    rid, n = message["id"], message["max_new_tokens"]
    sampler = Sampler(message["sampling"], rid)
    cache = model.new_cache(len(message["prompt"]) + n)
    logits = model.forward(message["prompt"], cache)
    chunk = []
    for step in range(n):
        token = sampler.choose(logits, step)
        chunk.append(token)
        if step + 1 < n:
            logits = model.forward([token], cache)
            if len(chunk) == 3:  # several tokens per chunk are allowed
                send({"id": rid, "tokens": chunk})
                chunk = []
    send({"id": rid, "tokens": chunk, "done": True})
"""


def test_an_executable_speaking_the_protocol_itself_passes(
    bwrap_sandbox: Sandbox, make_task: TaskFactory, harness_settings: Settings, tmp_path: Path
) -> None:
    assert participant.__file__ is not None
    submission = write_native(
        tmp_path / "native",
        NATIVE_DECODER,
        extra_files={
            "kv.py": example_source("kvcache"),
            "edc_participant.py": Path(participant.__file__).read_text(),
        },
    )
    assert not (submission / "submission.py").exists()
    task = make_task()
    evaluation = evaluate_submission(
        settings=harness_settings,
        sandbox=bwrap_sandbox,
        submission_dir=submission,
        task=task,
        run_dir=tmp_path / "run",
    )
    assert evaluation.metrics["correct"] is True
    assert evaluation.metrics["tokens_checked"] == task.requests.total * task.max_new_tokens
