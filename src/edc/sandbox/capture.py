"""Capped capture of a sandbox's output, shared by the backends.

A submission may write gigabytes to stdout. The reader keeps draining so the writer never blocks on
a full pipe, keeps only the first ``cap_bytes`` and counts the rest: memory stays bounded whatever
the flood.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

_READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class CapturedOutput:
    data: bytes  # the first ``cap_bytes`` of the stream
    total_bytes: int  # everything the stream produced, kept or not

    @property
    def truncated(self) -> bool:
        return self.total_bytes > len(self.data)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class CappedBuffer:
    """Keeps the first ``cap_bytes`` fed to it and counts the rest. Thread-safe."""

    def __init__(self, cap_bytes: int) -> None:
        if cap_bytes < 0:
            raise ValueError("cap_bytes must be >= 0")
        self._cap = cap_bytes
        self._kept = bytearray()
        self._total = 0
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            room = self._cap - len(self._kept)
            if room > 0:
                self._kept += chunk[:room]
            self._total += len(chunk)

    def result(self) -> CapturedOutput:
        with self._lock:
            return CapturedOutput(data=bytes(self._kept), total_bytes=self._total)


class StreamCapture:
    """Drains ``source`` on a daemon thread into a :class:`CappedBuffer`.

    ``source`` is a pipe's file object (read with ``os.read``, closed at end of stream) or any
    iterable of byte chunks (e.g. a container's log stream).
    """

    def __init__(
        self, source: BinaryIO | Iterable[bytes], cap_bytes: int, *, name: str = "capture"
    ) -> None:
        self._source = source
        self._buffer = CappedBuffer(cap_bytes)
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)

    def start(self) -> StreamCapture:
        self._thread.start()
        return self

    def result(self, timeout: float | None = None) -> CapturedOutput:
        """Wait up to ``timeout`` for the end of the stream; returns what was read so far."""
        self._thread.join(timeout)
        return self._buffer.result()

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def _drain(self) -> None:
        source = self._source
        try:
            if isinstance(source, io.IOBase):
                # os.read returns what the pipe holds now instead of waiting to fill a buffer.
                fd = source.fileno()
                while chunk := os.read(fd, _READ_SIZE):
                    self._buffer.feed(chunk)
            else:
                for chunk in source:
                    self._buffer.feed(chunk)
        except (OSError, ValueError):
            pass  # the stream broke under us: what was read is all there is
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()
