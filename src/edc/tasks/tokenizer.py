"""The byte-level tokenizer of the bundled task: one token id per UTF-8 byte, vocabulary 256.

Usage::

    from edc.tasks.tokenizer import decode, encode
    ids = encode("def f():")      # [100, 101, 102, 32, 102, 40, 41, 58]
    text = decode(ids)            # "def f():"

There are no special tokens: no BOS, no EOS. A prompt is its bytes and generation always runs for
exactly ``max_new_tokens`` tokens, so nothing needs a stop token. ``decode`` never fails: bytes that
are not valid UTF-8 (a model may emit half a multi-byte character) become U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterable

VOCAB_SIZE = 256


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(ids: Iterable[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")
