import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edc.errors import RunFailed
from edc.harness import protocol as p
from edc.status import FailureReason


def decode(line: str | bytes) -> p.SubmissionMessage:
    raw = line.encode() if isinstance(line, str) else line
    return p.decode_message(raw, vocab_size=256)


def refused(line: str | bytes) -> str:
    with pytest.raises(RunFailed) as info:
        decode(line)
    assert info.value.reason is FailureReason.PROTOCOL_ERROR
    assert info.value.message.endswith(".")
    return info.value.message


def test_harness_messages_encode_as_one_json_line() -> None:
    load = p.Load(model_dir="/model", vocab_size=256, max_new_tokens=8, sampling={"rule": "greedy"})
    gen = p.Generate(request_id="r1", prompt=(1, 2), max_new_tokens=8, sampling={"seed": 3})
    for line in (load.encode(), gen.encode(), p.SHUTDOWN_LINE):
        assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(load.encode())["version"] == p.PROTOCOL_VERSION
    assert json.loads(gen.encode()) == {
        "op": "generate",
        "id": "r1",
        "prompt": [1, 2],
        "max_new_tokens": 8,
        "sampling": {"seed": 3},
    }
    assert json.loads(p.SHUTDOWN_LINE) == {"op": "shutdown"}


def test_submission_messages_decode() -> None:
    assert decode('{"op":"ready"}') == p.Ready()
    assert decode('{"op":"ready","version":1}') == p.Ready()
    assert decode('{"id":"a","tokens":[1,255]}') == p.Chunk("a", (1, 255), False)
    assert decode('{"id":"a","done":true}') == p.Chunk("a", (), True)
    assert decode('{"id":"a","tokens":[0],"done":true}') == p.Chunk("a", (0,), True)
    assert decode('{"op":"error","message":"out of luck"}') == p.SubmissionError("out of luck")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"op":"hello"}', "expected a chunk"),
        ('{"op":"ready","version":2}', "version 2"),
        ('{"id":"a","tokens":[1],"extra":1}', "unknown field 'extra'"),
        ('{"id":7,"tokens":[1]}', "must be a string"),
        ('{"id":"a","tokens":"12"}', "list of token ids"),
        ('{"id":"a","tokens":[256]}', "token 256"),
        ('{"id":"a","tokens":[-1]}', "token -1"),
        ('{"id":"a","tokens":[1.0]}', "token 1.0"),
        ('{"id":"a","tokens":[true]}', "token True"),
        ('{"id":"a","done":"yes"}', '"done" must be'),
        ('{"id":"a","tokens":[]}', "neither tokens nor done"),
        ('{"op":"error","message":5}', "must be a string"),
    ],
)
def test_malformed_messages_are_refused_with_a_sentence(line: str | bytes, says: str) -> None:
    assert says in refused(line)


def test_out_of_vocabulary_names_the_vocabulary() -> None:
    message = refused('{"id":"r7","tokens":[3, 300]}')
    assert "'r7'" in message and "0 to 255" in message


def test_quotes_are_short() -> None:
    message = refused("x" * 10_000)
    assert len(message) < 300


def test_line_splitter_handles_partial_lines_and_blank_lines() -> None:
    splitter = p.LineSplitter()
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.feed(b":2}\n\n") == [b'{"b":2}']
    assert splitter.pending == b""


def test_line_splitter_refuses_an_endless_line() -> None:
    splitter = p.LineSplitter(max_line_bytes=100)
    splitter.feed(b"x" * 60)
    with pytest.raises(RunFailed) as info:
        splitter.feed(b"x" * 60)
    assert info.value.reason is FailureReason.PROTOCOL_ERROR
    assert "longer than 100 bytes" in info.value.message


def test_line_splitter_refuses_a_long_complete_line() -> None:
    with pytest.raises(RunFailed):
        p.LineSplitter(max_line_bytes=10).feed(b"y" * 20 + b"\n")


def test_a_deeply_nested_line_is_a_protocol_error_not_a_crash_of_the_harness() -> None:
    # json.loads raises RecursionError on this; left alone it read as the platform's failure,
    # retried for free.
    message = refused(b"[" * 200_000)
    assert "cannot read" in message and len(message) < 300


def test_a_quoted_request_id_is_cut_short() -> None:
    long_id = "x" * 10_000
    message = refused(json.dumps({"id": long_id, "tokens": [300]}))
    assert long_id not in message and len(message) < 400


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["id", "op", "tokens", "done", "x"]), inner)
            ),
            max_leaves=20,
        ).map(lambda obj: json.dumps(obj).encode()),
    )
)
def test_any_line_decodes_or_is_a_protocol_error(line: bytes) -> None:
    try:
        message = p.decode_message(line, vocab_size=256)
    except RunFailed as exc:
        assert exc.reason is FailureReason.PROTOCOL_ERROR
    else:
        assert isinstance(message, p.Ready | p.Chunk | p.SubmissionError)
