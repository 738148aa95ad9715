import pytest

from edc.tasks.tokenizer import VOCAB_SIZE, decode, encode


def test_one_id_per_utf8_byte() -> None:
    assert encode("def f():") == [100, 101, 102, 32, 102, 40, 41, 58]
    assert encode("é") == [0xC3, 0xA9]
    assert VOCAB_SIZE == 256


def test_round_trip_of_source_text() -> None:
    text = 'def greet(name: str) -> str:\n    return f"héllo {name}"\n'
    assert decode(encode(text)) == text


def test_decode_never_fails_on_partial_characters() -> None:
    assert decode([0x68, 0xC3]) == "h\ufffd"


def test_decode_refuses_ids_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError):
        decode([256])
