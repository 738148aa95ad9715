"""The helper module copied into every sandbox must agree with the platform's own code."""

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from edc.harness import participant
from edc.tasks.reference import load_weights
from edc.tasks.sampling import SamplingRule, fnv1a64, request_key, splitmix64
from edc.tasks.task import bundled_task_dir

MODEL_DIR = bundled_task_dir() / "model"


def test_the_helper_imports_nothing_from_the_platform() -> None:
    assert participant.__file__ is not None
    source = Path(participant.__file__).read_text()
    assert not re.search(r"^\s*(from|import) edc\b", source, flags=re.MULTILINE)


def test_hashes_agree() -> None:
    for x in (0, 1, 2**63, 2**64 - 1, 123456789):
        assert participant.splitmix64(x) == splitmix64(x)
    for data in (b"", b"pub-003", "é-λ".encode()):
        assert participant.fnv1a64(data) == fnv1a64(data)
    assert participant.request_key(20261128, "hidden-007") == request_key(20261128, "hidden-007")


@pytest.mark.parametrize("rule", ["gumbel", "greedy"])
def test_sampler_picks_the_same_tokens_and_scores_as_the_verifier(rule: str) -> None:
    task_rule = SamplingRule(kind=rule, temperature=0.8, seed=20261128)  # type: ignore[arg-type]
    sampling = {"rule": rule, "temperature": 0.8, "seed": 20261128}
    rng = np.random.default_rng(0)
    for request_id in ("pub-000", "hidden-031", "x~2"):
        ours = participant.Sampler(sampling, request_id)
        theirs = task_rule.for_request(request_id)
        logits = rng.normal(0, 3, size=(64, 256)).astype(np.float32)
        steps = np.arange(64)
        assert np.array_equal(ours.scores(logits, steps), theirs.scores(logits, steps))
        for step in (0, 1, 63):
            assert ours.choose(logits[step], step) == theirs.choose(logits[step], step)
        assert ours.choose_many(logits, steps) == [
            theirs.choose(row, int(s)) for row, s in zip(logits, steps, strict=True)
        ]


def test_safetensors_reader_matches_the_reference_loader() -> None:
    ours = participant.load_weights(str(MODEL_DIR))
    theirs = load_weights(MODEL_DIR)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype
        assert np.array_equal(ours[name], value), name
    assert participant.load_config(str(MODEL_DIR))["vocab_size"] == 256


def test_bf16_is_widened_like_the_reference(tmp_path: Path) -> None:
    values = np.array([1.5, -2.25, 3.0e-3], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, len(bf16)]}})
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bf16)
    got = participant.read_safetensors(str(path))["w"]
    assert got.dtype == np.float32
    assert np.allclose(got, values, rtol=1e-2)
