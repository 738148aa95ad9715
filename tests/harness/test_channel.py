import os
import socket
import threading
import time
from pathlib import Path

import pytest

from edc.harness.channel import SOCKET_NAME, Channel, ChannelClosed, Listener


def connect(path: Path) -> socket.socket:
    # Through the directory's fd, so that a path longer than sockaddr_un allows still works.
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)
    return client


def accepted(listener: Listener) -> Channel:
    channel = listener.accept(
        deadline_ns=time.monotonic_ns() + 5_000_000_000, still_running=lambda: True
    )
    assert channel is not None
    return channel


def test_listener_binds_in_a_directory_with_a_long_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    listener = Listener(deep)
    try:
        assert listener.path == deep / SOCKET_NAME and listener.path.exists()
        assert listener.path.stat().st_mode & 0o777 == 0o777
        client = connect(listener.path)
        channel = accepted(listener)
        client.sendall(b"hello\n")
        stamp, data = channel.receive(5.0)
        assert data == b"hello\n" and stamp <= time.monotonic_ns()
        channel.close()
        client.close()
    finally:
        listener.close()
    assert not listener.path.exists()


def test_accept_gives_up_at_the_deadline_or_when_the_process_ends(tmp_path: Path) -> None:
    listener = Listener(tmp_path)
    try:
        started = time.monotonic()
        assert (
            listener.accept(
                deadline_ns=time.monotonic_ns() + 200_000_000, still_running=lambda: True
            )
            is None
        )
        assert 0.15 < time.monotonic() - started < 2.0
        far = time.monotonic_ns() + 60_000_000_000
        assert listener.accept(deadline_ns=far, still_running=lambda: False) is None
    finally:
        listener.close()


def test_sending_never_blocks_on_a_peer_that_does_not_read(tmp_path: Path) -> None:
    listener = Listener(tmp_path)
    client = connect(listener.path)
    channel = accepted(listener)
    try:
        started = time.monotonic()
        channel.send(b"x" * (16 << 20))  # far more than the socket buffers hold
        assert time.monotonic() - started < 2.0
        received = bytearray()

        def drain() -> None:
            while len(received) < 16 << 20:
                received.extend(client.recv(1 << 20))

        reader = threading.Thread(target=drain)
        reader.start()
        client.sendall(b"ack\n")
        # Receiving keeps writing the queued bytes, so the peer gets them all.
        _, data = channel.receive(5.0)
        assert data == b"ack\n"
        deadline = time.monotonic() + 10
        while reader.is_alive() and time.monotonic() < deadline:
            channel.receive(0.05)
        reader.join(timeout=1)
        assert len(received) == 16 << 20
    finally:
        channel.close()
        client.close()
        listener.close()


def test_silence_and_end_of_stream(tmp_path: Path) -> None:
    listener = Listener(tmp_path)
    client = connect(listener.path)
    channel = accepted(listener)
    try:
        _, data = channel.receive(0.05)
        assert data == b""
        client.close()
        with pytest.raises(ChannelClosed):
            channel.receive(5.0)
    finally:
        channel.close()
        listener.close()


def test_a_read_takes_no_more_than_asked_and_leaves_the_rest_queued(tmp_path: Path) -> None:
    listener = Listener(tmp_path)
    client = connect(listener.path)
    channel = accepted(listener)
    try:
        client.sendall(b"a" * 100 + b"\n")
        _, first = channel.receive(5.0, 16)
        assert first == b"a" * 16
        rest = bytearray()
        while len(rest) < 85:
            _, data = channel.receive(5.0)
            assert data
            rest += data
        assert bytes(rest) == b"a" * 84 + b"\n"
    finally:
        channel.close()
        client.close()
        listener.close()
