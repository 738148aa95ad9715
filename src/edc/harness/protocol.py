"""The decode protocol, version 1: JSON lines between the harness and a submission.

One JSON object per line (UTF-8, ``\\n``-terminated) over the channel socket, never over the
submission's stdout/stderr (those are its logs). ``docs/submission-format.md`` is the public
write-up.

Harness → submission::

    {"op":"load","version":1,"model_dir":"/model","vocab_size":256,"max_new_tokens":64,
     "sampling":{...}}
    {"op":"generate","id":"r0","prompt":[..],"max_new_tokens":64,"sampling":{...}}
    {"op":"shutdown"}

Submission → harness::

    {"op":"ready"}                               once, after loading
    {"id":"r0","tokens":[17,4]}                  one or more tokens of a request
    {"id":"r0","done":true}                      the request is complete
    {"id":"r0","tokens":[9],"done":true}         both at once
    {"op":"error","message":"..."}               the submission gives up, saying why

Everything the submission sends is validated strictly here: unknown fields, wrong types, token ids
outside the vocabulary and over-long lines are protocol errors with a sentence naming the problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edc.errors import RunFailed
from edc.status import FailureReason

PROTOCOL_VERSION = 1
# A line longer than this is refused: a chunk of even a few thousand tokens is far below it.
MAX_LINE_BYTES = 1 << 20
MAX_ERROR_MESSAGE_CHARS = 2000
QUOTE_CHARS = 80


# --- harness → submission -------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    model_dir: str
    vocab_size: int
    max_new_tokens: int
    sampling: Mapping[str, Any]

    def encode(self) -> bytes:
        return _line(
            {
                "op": "load",
                "version": PROTOCOL_VERSION,
                "model_dir": self.model_dir,
                "vocab_size": self.vocab_size,
                "max_new_tokens": self.max_new_tokens,
                "sampling": dict(self.sampling),
            }
        )


@dataclass(frozen=True)
class Generate:
    request_id: str
    prompt: tuple[int, ...]
    max_new_tokens: int
    sampling: Mapping[str, Any]  # what the task's sampling rule needs for this request

    def encode(self) -> bytes:
        return _line(
            {
                "op": "generate",
                "id": self.request_id,
                "prompt": list(self.prompt),
                "max_new_tokens": self.max_new_tokens,
                "sampling": dict(self.sampling),
            }
        )


SHUTDOWN_LINE = b'{"op":"shutdown"}\n'


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# --- submission → harness -------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class Chunk:
    """Tokens for one request, possibly none when the line only says ``done``."""

    request_id: str
    tokens: tuple[int, ...]
    done: bool


@dataclass(frozen=True)
class SubmissionError:
    message: str


SubmissionMessage = Ready | Chunk | SubmissionError

_CHUNK_KEYS = frozenset({"id", "tokens", "done"})


def violation(sentence: str) -> RunFailed:
    return RunFailed(FailureReason.PROTOCOL_ERROR, sentence)


def quote(raw: bytes | str) -> str:
    """A short, printable excerpt of what the submission sent, for error sentences."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = text.strip()
    if len(text) > QUOTE_CHARS:
        text = text[:QUOTE_CHARS] + "…"
    return repr(text)


def short_repr(value: object) -> str:
    """``repr(value)``, cut to a sane length: sentences may name what the submission sent."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


def decode_message(line: bytes, *, vocab_size: int) -> SubmissionMessage:
    """Parse and validate one line from the submission; raises RunFailed(protocol_error).

    Nothing a submission sends may end as anything but a protocol error: a parser's own failure
    (a line nested too deeply raises RecursionError) would otherwise read as the platform's.
    """
    try:
        return _decode_message(line, vocab_size)
    except RunFailed:
        raise
    except Exception as exc:
        raise violation(
            f"The submission sent a line the harness cannot read ({type(exc).__name__}): "
            f"{quote(line)}."
        ) from None


def _decode_message(line: bytes, vocab_size: int) -> SubmissionMessage:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise violation(
            f"The submission sent a line that is not valid JSON: {quote(line)}."
        ) from None
    if not isinstance(obj, dict):
        raise violation(f"The submission sent {quote(line)}, which is not a JSON object.")
    if "id" in obj:
        return _decode_chunk(obj, line, vocab_size)
    op = obj.get("op")
    if op == "ready":
        _only_keys(obj, {"op", "version"}, line)
        version = obj.get("version", PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise violation(
                f"The submission speaks protocol version {version!r}; "
                f"this harness speaks version {PROTOCOL_VERSION}."
            )
        return Ready()
    if op == "error":
        _only_keys(obj, {"op", "message"}, line)
        message = obj.get("message", "")
        if not isinstance(message, str):
            raise violation(f"An error message must be a string, got {quote(line)}.")
        return SubmissionError(message[:MAX_ERROR_MESSAGE_CHARS])
    raise violation(
        f'The submission sent {quote(line)}: expected a chunk with an "id", '
        'or {"op": "ready"} or {"op": "error"}.'
    )


def _decode_chunk(obj: dict[str, Any], line: bytes, vocab_size: int) -> Chunk:
    _only_keys(obj, _CHUNK_KEYS, line)
    request_id = obj["id"]
    if not isinstance(request_id, str):
        raise violation(f"A request id must be a string, got {quote(line)}.")
    tokens = obj.get("tokens", [])
    done = obj.get("done", False)
    if not isinstance(done, bool):
        raise violation(f'"done" must be true or false, got {quote(line)}.')
    if not isinstance(tokens, list):
        raise violation(f'"tokens" must be a list of token ids, got {quote(line)}.')
    for token in tokens:
        # bool is an int in Python; JSON true is not a token id.
        if type(token) is not int or not 0 <= token < vocab_size:
            raise violation(
                f"Request {short_repr(request_id)} got token {short_repr(token)}, which is not a "
                f"token id (the vocabulary has ids 0 to {vocab_size - 1})."
            )
    if not tokens and not done:
        raise violation(f"The submission sent a chunk with neither tokens nor done: {quote(line)}.")
    return Chunk(request_id, tuple(tokens), done)


def _only_keys(obj: Mapping[str, Any], allowed: frozenset[str] | set[str], line: bytes) -> None:
    extra = obj.keys() - allowed
    if extra:
        raise violation(
            f"The submission sent an unknown field {sorted(extra)[0]!r} in {quote(line)}."
        )


class LineSplitter:
    """Splits a byte stream into lines, refusing any line longer than ``MAX_LINE_BYTES``."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._partial + data if self._partial else data
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > self._max or any(len(line) > self._max for line in lines):
            raise violation(
                f"The submission sent a line longer than {self._max} bytes on the channel."
            )
        return [line for line in lines if line.strip()]

    @property
    def pending(self) -> bytes:
        """An unterminated last line, if the stream ended mid-line."""
        return self._partial
