"""Structured logs: one JSON object per line, carrying the context they were emitted in.

Usage::

    configure_logging(json=settings.log_format == "json")   # once, at process start
    with log_context(submission_id=7, worker_id="gpu3-w-1a2b3c"):
        log.info("evaluating")   # {"time": ..., "level": "INFO", ..., "submission_id": 7, ...}

The context lives in a :class:`contextvars.ContextVar`, so it follows the code that set it: into
``await``-ed calls, into threads started through anyio or ``contextvars.copy_context().run``,
and into a forked child (an RQ work-horse). A plain ``threading.Thread`` starts with an empty
context. Fields passed with ``extra=`` win over context fields of the same name.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

_NO_FIELDS: Mapping[str, object] = MappingProxyType({})
_context: ContextVar[Mapping[str, object]] = ContextVar("edc_log_context", default=_NO_FIELDS)

# Attributes every LogRecord has; anything else on a record is a field (context or extra=).
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName", "color_message"}  # uvicorn's coloured copy of message
# Set on records by ContextFilter, so a record is enriched once even with several handlers.
_ENRICHED = "_edc_context_applied"


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (nested blocks add to outer ones).

    A field given as None is left out, so callers may pass what they have.
    """
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, object]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record (on the handler, so records propagated
    from any logger get it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, _ENRICHED, False):
            for key, value in _context.get().items():
                if not hasattr(record, key):
                    setattr(record, key, value)
            setattr(record, _ENRICHED, True)
        return True


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's context and ``extra=`` fields, in the order they were added."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_edc_")
    }


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a field that is not JSON (a Path, an enum member) is logged as its text.
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual line for people, with the fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record_fields(record)
        if fields:
            line += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return line


class _EdcHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces only it."""


def configure_logging(
    json: bool, *, level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) as JSON lines or as text.

    Replaces a handler installed by an earlier call and leaves other handlers alone; returns
    the handler (to remove it again, in tests).
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _EdcHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _EdcHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return handler
