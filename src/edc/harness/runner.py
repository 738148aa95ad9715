"""Drive one sandboxed submission through the decode protocol and stamp everything it sends.

A session: start the sandbox, wait for the submission to connect, ``load`` → ``ready`` within the
load timeout, then the warm-up requests (one at a time, not timed), ``repeats`` × (the latency
scenario, one request at a time, and the throughput scenario, every request at once), the serving
sweep when the task has one (requests sent on a Poisson schedule at rising offered rates, see
:func:`run_sweep`), ``shutdown``. Every chunk is stamped with ``time.monotonic_ns()`` as it is
read off the socket.

The submission's end is judged strictly as it goes: a malformed line, an unknown id, too many or
too few tokens, an id outside the vocabulary or silence ends the run at once with a
:class:`~edc.errors.RunFailed` whose reason and sentence say what happened, and the sandbox's logs.
Hidden prompts only ever travel as ``generate`` messages; nothing of the task but its model
directory is mounted.

A submission cannot make the harness late. Every byte it sends costs the harness time to read and
parse, and blank lines or whitespace inside a valid line cost it nothing to send: flooding the
channel during the sweep once held the harness inside 256 KiB reads while sends fell due, a lag
filed as the platform's failure, which a worker retries (a free retry, or a denial of service);
the flood also counted as being heard, so it hid a stalled decoder from the step timeout. So the
channel is metered: the submission may send :data:`CHANNEL_ALLOWANCE_BYTES` plus
:data:`CHANNEL_BYTES_PER_TOKEN` per request and per token asked so far (some twenty times what
honest chunks take), and more is a protocol error, the submission's own. Within that allowance
the sweep reads at most :data:`SCHEDULE_READ_BYTES` at a time and sends whatever fell due before
reading again, so the work between two looks at the schedule stays far below the lag limit. What
lag remains is the harness's or the machine's, and only that is infrastructure.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edc.config import Settings
from edc.errors import RunFailed
from edc.harness import participant, protocol, shim
from edc.harness.arrivals import arrival_offsets_ns
from edc.harness.channel import Channel, ChannelClosed, Listener
from edc.harness.disclosure import disclose_progress
from edc.harness.metrics import RequestTiming
from edc.harness.serving import RateSweep, ServedRequest, Slo, attained, rate_metrics
from edc.sandbox.base import (
    CHANNEL_DIR,
    MODEL_DIR,
    SUBMISSION_DIR,
    ExitKind,
    Mount,
    Sandbox,
    SandboxProcess,
    SandboxResult,
    SandboxSpec,
)
from edc.sandbox.cpus import harness_pinned, thread_count
from edc.status import FailureReason

PYTHON_ENTRY = "submission.py"
NATIVE_ENTRY = "run"
SHIM_NAME = "edc_shim.py"
PARTICIPANT_MODULE_NAME = "edc_participant.py"
SOCKET_PATH = f"{CHANNEL_DIR}/edc.sock"

# How much of a submission's own error message a failure sentence quotes.
ERROR_QUOTE_CHARS = 500
# Silence while a request waits longer than this is a hang, whatever the run's overall budget.
DEFAULT_STEP_TIMEOUT_S = 30.0
SHUTDOWN_GRACE_S = 5.0
# After the channel closes, how long the process may take to finish exiting before it is killed.
EXIT_GRACE_S = 3.0
# The serving scenario's sends: the goal is 1 ms at p99; far above it the schedule was not kept.
# The limit is the operator's (EDC_SERVING_SEND_LAG_LIMIT_MS); this is its default.
DEFAULT_SEND_LAG_LIMIT_MS: float = Settings.model_fields["serving_send_lag_limit_ms"].default
# The sandbox's own wall clock only backs up the harness's deadlines.
WALL_MARGIN_S = 15.0
# What the submission may send on the channel (see the module docstring): one longest line (an
# error, say), then per token asked far more than a chunk line takes (about 50 bytes).
CHANNEL_ALLOWANCE_BYTES = protocol.MAX_LINE_BYTES
CHANNEL_BYTES_PER_TOKEN = 1024
# The sweep's reads: splitting even this much of blank lines takes ~0.3 ms (256 KiB took 20 ms),
# so no send waits long on one; honest chunk lines (~50 bytes) still come ~80 to a read.
SCHEDULE_READ_BYTES = 4 * 1024


@dataclass(frozen=True)
class SessionLimits:
    load_timeout_s: float
    run_timeout_s: float  # from ready to the last token of the last scenario
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    memory_mb: int = 2048
    pids_max: int = 256
    cpus: float = 1.0
    scratch_mb: int = 512
    output_cap_bytes: int = 64 * 1024
    gpus: tuple[str, ...] = ()  # the worker's devices, handed to the sandbox
    cpuset: tuple[int, ...] = ()  # the worker's cores, the sandbox pinned there; empty: unpinned
    harness_cpuset: tuple[int, ...] = ()  # where the harness runs while timing; empty: anywhere
    # Above this p99 lateness of its own sends, the harness failed to drive the serving schedule.
    send_lag_limit_ms: float = DEFAULT_SEND_LAG_LIMIT_MS


@dataclass(frozen=True)
class RequestSpec:
    request_id: str
    prompt: tuple[int, ...]
    max_new_tokens: int | None = None  # None: the plan's


@dataclass(frozen=True)
class ServingPlan:
    """The serving sweep: ``specs`` are taken ``requests_per_rate`` at a time, one offered rate
    after another, each set sent on a schedule drawn with ``schedule_seed`` (secret)."""

    specs: tuple[RequestSpec, ...]
    rates: tuple[float, ...]
    requests_per_rate: int
    burstiness: float
    schedule_seed: int
    slo: Slo
    target_share: float
    refine_steps: int
    confirm: int
    time_budget_s: float | None = None  # then no more ascent or bisection, only confirmation

    def schedule(self, rate: float, round_index: int) -> list[int]:
        """The send offsets of the ``round_index``-th round, at ``rate``: a fresh draw per round,
        all of them fixed by the secret seed."""
        return arrival_offsets_ns(
            rate=rate,
            count=self.requests_per_rate,
            burstiness=self.burstiness,
            seed=self.schedule_seed + round_index,
        )


@dataclass(frozen=True)
class SessionPlan:
    warmup: tuple[RequestSpec, ...]
    latency: tuple[tuple[RequestSpec, ...], ...]  # one set per timed repeat
    throughput: tuple[tuple[RequestSpec, ...], ...]  # one set per timed repeat
    max_new_tokens: int
    vocab_size: int
    sampling: Mapping[str, Any]  # sent with every generate: the rule with the secret seed
    load_sampling: Mapping[str, Any]  # sent with load: the rule without the seed
    serving: ServingPlan | None = None

    @property
    def total_requests(self) -> int:
        """Requests the plan may send (the serving sweep's most included)."""
        fixed = len(self.warmup) + sum(len(s) for s in (*self.latency, *self.throughput))
        return fixed + (len(self.serving.specs) if self.serving else 0)


@dataclass
class RequestRecord:
    """What the harness saw of one request, as it happened."""

    request_id: str
    prompt: tuple[int, ...]
    max_new_tokens: int
    sent_ns: int = 0
    tokens: list[int] = field(default_factory=list)
    stamps_ns: list[int] = field(default_factory=list)  # one per chunk with tokens
    sizes: list[int] = field(default_factory=list)
    done: bool = False

    def timing(self) -> RequestTiming:
        return RequestTiming(
            request_id=self.request_id,
            sent_ns=self.sent_ns,
            chunk_arrivals_ns=tuple(self.stamps_ns),
            chunk_sizes=tuple(self.sizes),
        )


@dataclass(frozen=True)
class ThroughputRun:
    records: tuple[RequestRecord, ...]
    start_ns: int  # just before the first generate was written
    end_ns: int  # arrival of the last chunk

    @property
    def tokens(self) -> int:
        return sum(len(r.tokens) for r in self.records)


@dataclass(frozen=True)
class ServingRound:
    """One offered rate of the sweep: its requests and when the schedule said to send each."""

    rate: float
    records: tuple[RequestRecord, ...]
    scheduled_ns: tuple[int, ...]
    metrics: dict[str, Any]  # edc.harness.serving.rate_metrics
    attained: bool


@dataclass(frozen=True)
class ServingSweep:
    """The rounds of the sweep in the order run, and what the sweep concluded from them."""

    rounds: tuple[ServingRound, ...]
    max_rate_under_slo: float
    bracket: tuple[float, float]  # the true maximum lies between a rate held and one missed
    budget_spent: bool = False  # the time budget ended the search before its steps did


@dataclass(frozen=True)
class SessionResult:
    load_s: float
    warmup: tuple[RequestRecord, ...]
    latency: tuple[tuple[RequestRecord, ...], ...]
    throughput: tuple[ThroughputRun, ...]  # one per timed repeat
    logs: str
    serving: ServingSweep | None = None

    def all_records(self) -> list[RequestRecord]:
        return [
            *self.warmup,
            *(r for repeat in self.latency for r in repeat),
            *(r for run in self.throughput for r in run.records),
            *(
                r
                for served in (self.serving.rounds if self.serving else ())
                for r in served.records
            ),
        ]


Progress = Callable[[str, int, int], None]  # phase, requests done, requests in the phase


# --- preparing the sandbox ----------------------------------------------------------------------


def entry_argv(submission_dir: Path, python: str) -> tuple[str, ...]:
    """The shim for ``submission.py``, else the submission's own ``run`` executable."""
    if (submission_dir / PYTHON_ENTRY).is_file():
        return (python, f"{CHANNEL_DIR}/{SHIM_NAME}")
    native = submission_dir / NATIVE_ENTRY
    if native.is_file():
        if not os.access(native, os.X_OK):
            raise RunFailed(
                FailureReason.INVALID_ARCHIVE,
                f"The entry point {NATIVE_ENTRY!r} is not executable; set its executable bit.",
            )
        return (f"{SUBMISSION_DIR}/{NATIVE_ENTRY}",)
    raise RunFailed(
        FailureReason.INVALID_ARCHIVE,
        f"The submission has no entry point: add {PYTHON_ENTRY} or an executable {NATIVE_ENTRY}.",
    )


def prepare_channel_dir(channel_dir: Path) -> None:
    """The directory mounted at CHANNEL_DIR: the shim and the helper module, nothing else."""
    shutil.rmtree(channel_dir, ignore_errors=True)  # a previous session's, never shared
    channel_dir.mkdir(parents=True)
    channel_dir.chmod(0o755)
    for module, name in ((shim, SHIM_NAME), (participant, PARTICIPANT_MODULE_NAME)):
        assert module.__file__ is not None
        target = channel_dir / name
        shutil.copyfile(module.__file__, target)
        target.chmod(0o644)


def sandbox_env(cpus: float, cpuset: Sequence[int] = ()) -> dict[str, str]:
    threads = str(thread_count(cpus, cpuset))
    return {
        "EDC_SOCKET": SOCKET_PATH,
        "EDC_MODEL_DIR": MODEL_DIR,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        # Math libraries size their pools to the cores owned (up to the CPU share), not the host's.
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }


def combined_logs(result: SandboxResult) -> str:
    parts = []
    for name, text, cut in (
        ("stdout", result.stdout, result.stdout_truncated),
        ("stderr", result.stderr, result.stderr_truncated),
    ):
        if text or cut:
            parts.append(f"--- {name}{' (truncated)' if cut else ''} ---\n{text}")
    return "\n".join(parts)


# --- the decode session -------------------------------------------------------------------------


class DecodeSession:
    """The conversation with one connected submission (not a database session)."""

    def __init__(
        self, channel: Channel, plan: SessionPlan, limits: SessionLimits, model_dir: str = MODEL_DIR
    ) -> None:
        self._channel = channel
        self._model_dir = model_dir  # where the program finds the model
        self._plan = plan
        self._limits = limits
        self._splitter = protocol.LineSplitter()
        self._inflight: dict[str, RequestRecord] = {}
        self._finished: set[str] = set()
        self._run_deadline_ns: int | None = None
        self._last_stamp_ns = 0
        self._received_bytes = 0
        self._allowed_bytes = CHANNEL_ALLOWANCE_BYTES  # grows with every request sent

    @property
    def requests_done(self) -> int:
        return len(self._finished)

    # -- load --

    def load(self, deadline_ns: int) -> None:
        self._channel.send(
            protocol.Load(
                model_dir=self._model_dir,
                vocab_size=self._plan.vocab_size,
                max_new_tokens=self._plan.max_new_tokens,
                sampling=self._plan.load_sampling,
            ).encode()
        )
        while True:
            left_s = (deadline_ns - time.monotonic_ns()) / 1e9
            messages = self._receive(left_s, waiting_for="ready")
            for i, (_stamp, message) in enumerate(messages):
                if isinstance(message, protocol.Ready):
                    self._run_deadline_ns = time.monotonic_ns() + int(
                        self._limits.run_timeout_s * 1e9
                    )
                    for stamp, later in messages[i + 1 :]:
                        self._handle(stamp, later)
                    return
                if isinstance(message, protocol.SubmissionError):
                    raise submission_error(message)
                raise protocol.violation("The submission sent tokens before it was ready.")

    # -- scenarios --

    def one_at_a_time(
        self, specs: Sequence[RequestSpec], progress: Callable[[int], None] | None = None
    ) -> tuple[RequestRecord, ...]:
        records = []
        for i, spec in enumerate(specs):
            record = self._start(spec)
            self._await(lambda: not self._inflight)
            records.append(record)
            if progress:
                progress(i + 1)
        return tuple(records)

    def all_at_once(
        self, specs: Sequence[RequestSpec], progress: Callable[[int], None] | None = None
    ) -> ThroughputRun:
        records = tuple(self._start(spec) for spec in specs)
        done = 0

        def finished() -> bool:
            nonlocal done
            now_done = len(specs) - len(self._inflight)
            if progress and now_done != done:
                progress(now_done)
            done = now_done
            return not self._inflight

        self._await(finished)
        start_ns = records[0].sent_ns if records else time.monotonic_ns()
        return ThroughputRun(records=records, start_ns=start_ns, end_ns=self._last_stamp_ns)

    def on_schedule(
        self, specs: Sequence[RequestSpec], offsets_ns: Sequence[int]
    ) -> tuple[tuple[RequestRecord, ...], tuple[int, ...]]:
        """Send each request at its offset from now, whatever the submission is doing, taking
        its chunks in between; return the records and the scheduled send times once every
        request is done. A silence of the step timeout while requests wait ends the run."""
        start_ns = time.monotonic_ns()
        scheduled = tuple(start_ns + offset for offset in offsets_ns)
        records: list[RequestRecord] = []
        heard_ns = start_ns
        while len(records) < len(specs) or self._inflight:
            now = time.monotonic_ns()
            if len(records) < len(specs) and now >= scheduled[len(records)]:
                if not self._inflight:
                    heard_ns = now  # silence counts only while a request waits
                records.append(self._start(specs[len(records)]))
                continue
            assert self._run_deadline_ns is not None
            if now >= self._run_deadline_ns:
                raise self._silence("tokens")
            wake_ns = self._run_deadline_ns
            if len(records) < len(specs):
                wake_ns = min(wake_ns, scheduled[len(records)])
            if self._inflight:
                silent_until = heard_ns + int(self._limits.step_timeout_s * 1e9)
                if now >= silent_until:
                    raise self._silence("tokens")
                wake_ns = min(wake_ns, silent_until)
            # A small read, so that parsing it never holds up a send falling due.
            stamp, data = self._channel.receive((wake_ns - now) / 1e9, SCHEDULE_READ_BYTES)
            if not data:
                continue
            heard_ns = stamp
            for line in self._lines(data):
                message = protocol.decode_message(line, vocab_size=self._plan.vocab_size)
                self._handle(stamp, message)
        return tuple(records), scheduled

    def shutdown(self) -> None:
        self._channel.send(protocol.SHUTDOWN_LINE)

    # -- the machinery --

    def _start(self, spec: RequestSpec) -> RequestRecord:
        tokens = spec.max_new_tokens or self._plan.max_new_tokens
        record = RequestRecord(spec.request_id, spec.prompt, tokens)
        line = protocol.Generate(
            request_id=spec.request_id,
            prompt=spec.prompt,
            max_new_tokens=tokens,
            sampling=self._plan.sampling,
        ).encode()
        self._inflight[spec.request_id] = record
        self._allowed_bytes += CHANNEL_BYTES_PER_TOKEN * (tokens + 1)  # +1: the done line
        record.sent_ns = time.monotonic_ns()
        self._channel.send(line)
        return record

    def _await(self, satisfied: Callable[[], bool]) -> None:
        while not satisfied():
            assert self._run_deadline_ns is not None
            left_s = (self._run_deadline_ns - time.monotonic_ns()) / 1e9
            wait_s = min(self._limits.step_timeout_s, left_s)
            for stamp, message in self._receive(wait_s, waiting_for="tokens"):
                self._handle(stamp, message)

    def _receive(
        self, timeout_s: float, *, waiting_for: str
    ) -> list[tuple[int, protocol.SubmissionMessage]]:
        """At least one message, or a RunFailed saying why none came."""
        deadline_ns = time.monotonic_ns() + int(max(timeout_s, 0.0) * 1e9)
        while True:
            left_s = max(deadline_ns - time.monotonic_ns(), 0) / 1e9
            stamp, data = self._channel.receive(left_s)
            if not data:
                raise self._silence(waiting_for)
            lines = self._lines(data)
            if lines:
                return [
                    (stamp, protocol.decode_message(line, vocab_size=self._plan.vocab_size))
                    for line in lines
                ]

    def _lines(self, data: bytes) -> list[bytes]:
        """The complete lines in ``data``, none parsed before it is counted against the channel's
        allowance (an over-long line is named as such first)."""
        lines = self._splitter.feed(data)
        self._received_bytes += len(data)
        if self._received_bytes > self._allowed_bytes:
            raise protocol.violation(
                f"The submission flooded the channel: {self._received_bytes} bytes, more than "
                f"the {self._allowed_bytes} its requests so far allow ({CHANNEL_ALLOWANCE_BYTES} "
                f"plus {CHANNEL_BYTES_PER_TOKEN} per request and per token asked; "
                "blank lines count)."
            )
        return lines

    def _silence(self, waiting_for: str) -> RunFailed:
        if waiting_for == "ready":
            return RunFailed(
                FailureReason.LOAD_TIMEOUT,
                f"The submission did not answer load with ready within the load timeout of "
                f"{self._limits.load_timeout_s:g} s.",
            )
        assert self._run_deadline_ns is not None
        if time.monotonic_ns() >= self._run_deadline_ns:
            return RunFailed(
                FailureReason.RUN_TIMEOUT,
                f"The run did not finish within its limit of {self._limits.run_timeout_s:g} s "
                f"({len(self._finished)} of {self._plan.total_requests} requests done).",
            )
        waiting = ", ".join(
            f"{r.request_id!r} ({len(r.tokens)} of {r.max_new_tokens} tokens)"
            for r in list(self._inflight.values())[:3]
        )
        hint = ""
        if all(len(r.tokens) == r.max_new_tokens for r in self._inflight.values()):
            hint = ' (every token arrived, but no {"id": ..., "done": true})'
        return RunFailed(
            FailureReason.RUN_TIMEOUT,
            f"The submission sent nothing for {self._limits.step_timeout_s:g} s while requests "
            f"were waiting: {waiting}{hint}.",
        )

    def _handle(self, stamp: int, message: protocol.SubmissionMessage) -> None:
        if isinstance(message, protocol.Chunk):
            self._take_chunk(stamp, message)
        elif isinstance(message, protocol.SubmissionError):
            raise submission_error(message)
        else:
            raise protocol.violation("The submission sent ready a second time.")

    def _take_chunk(self, stamp: int, chunk: protocol.Chunk) -> None:
        record = self._inflight.get(chunk.request_id)
        if record is None:
            if chunk.request_id in self._finished:
                raise protocol.violation(
                    f"The submission sent more for request {chunk.request_id!r} after it was done."
                )
            raise protocol.violation(
                "The submission sent tokens for an unknown request id "
                f"{protocol.short_repr(chunk.request_id)}."
            )
        if chunk.tokens:
            if len(record.tokens) + len(chunk.tokens) > record.max_new_tokens:
                raise protocol.violation(
                    f"Request {record.request_id!r} got "
                    f"{len(record.tokens) + len(chunk.tokens)} tokens; exactly "
                    f"{record.max_new_tokens} were asked for."
                )
            record.tokens.extend(chunk.tokens)
            record.stamps_ns.append(stamp)
            record.sizes.append(len(chunk.tokens))
            self._last_stamp_ns = stamp
        if chunk.done:
            if len(record.tokens) < record.max_new_tokens:
                raise protocol.violation(
                    f"Request {record.request_id!r} was marked done after {len(record.tokens)} "
                    f"tokens; exactly {record.max_new_tokens} were asked for."
                )
            record.done = True
            del self._inflight[record.request_id]
            self._finished.add(record.request_id)


def submission_error(message: protocol.SubmissionError) -> RunFailed:
    text = message.message.strip() or "no message"
    reason = FailureReason.CRASHED
    if text.startswith("MemoryError"):
        reason = FailureReason.MEMORY_LIMIT
    text = text if len(text) <= ERROR_QUOTE_CHARS else text[:ERROR_QUOTE_CHARS] + "…"
    end = "" if text.endswith((".", "!", "?", "…")) else "."
    return RunFailed(reason, f"The submission stopped with an error: {text}{end}")


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    # A collection in the middle of a latency scenario would be charged to the submission.
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --- one whole run ------------------------------------------------------------------------------


def run_session(
    *,
    sandbox: Sandbox,
    submission_dir: Path,
    model_dir: Path,
    run_dir: Path,
    plan: SessionPlan,
    limits: SessionLimits,
    labels: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> SessionResult:
    """Run every scenario of ``plan`` against the submission; raises RunFailed with its logs.

    The harness (every thread of this process) runs on ``limits.harness_cpuset`` for the session,
    cores the submission does not own, so stamping never waits for the decoder's core; the cores
    are given back afterwards (preparation and verification may use them all).
    """
    with harness_pinned(limits.harness_cpuset):
        argv = entry_argv(submission_dir, sandbox.python)
        channel_dir = run_dir / "channel"
        prepare_channel_dir(channel_dir)
        listener = Listener(channel_dir)
        spec = SandboxSpec(
            argv=argv,
            submission_dir=submission_dir,
            env=sandbox_env(limits.cpus, limits.cpuset),
            mounts=(Mount(model_dir, MODEL_DIR), Mount(channel_dir, CHANNEL_DIR)),
            wall_timeout_s=limits.load_timeout_s + limits.run_timeout_s + WALL_MARGIN_S,
            memory_mb=limits.memory_mb,
            pids_max=limits.pids_max,
            cpus=limits.cpus,
            cpuset=limits.cpuset,
            scratch_mb=limits.scratch_mb,
            output_cap_bytes=limits.output_cap_bytes,
            gpus=limits.gpus,
            labels=dict(labels or {}),
        )

        def report(phase: str, done: int, total: int) -> None:
            if progress:
                progress(phase, done, total)

        report("start", 0, 0)
        started_ns = time.monotonic_ns()
        try:
            process = sandbox.start(spec)
        except BaseException:
            listener.close()
            raise
        channel: Channel | None = None
        session: DecodeSession | None = None
        shut_down = False
        try:
            load_deadline = started_ns + int(limits.load_timeout_s * 1e9)
            channel = listener.accept(deadline_ns=load_deadline, still_running=process.poll)
            if channel is None:
                if process.poll():
                    raise RunFailed(
                        FailureReason.LOAD_TIMEOUT,
                        f"The submission did not connect to {SOCKET_PATH} within the load timeout "
                        f"of {limits.load_timeout_s:g} s.",
                    )
                raise _ended_early(process, "before connecting to the channel")
            session = DecodeSession(
                channel, plan, limits, model_dir=sandbox.seen_at(spec, MODEL_DIR)
            )
            report("load", 0, 1)
            load_sent_ns = time.monotonic_ns()
            session.load(load_deadline)
            load_s = (time.monotonic_ns() - load_sent_ns) / 1e9
            report("load", 1, 1)

            with _no_gc_pauses():
                warmup = session.one_at_a_time(
                    plan.warmup, lambda n: report("warmup", n, len(plan.warmup))
                )
                latency: list[tuple[RequestRecord, ...]] = []
                throughput: list[ThroughputRun] = []
                latency_total = sum(len(s) for s in plan.latency)
                throughput_total = sum(len(s) for s in plan.throughput)
                # Each repeat runs both scenarios, so slow moments of the machine fall on both.
                for timed, at_once in zip(plan.latency, plan.throughput, strict=True):
                    advance = _offset(report, "latency", latency, latency_total)
                    latency.append(session.one_at_a_time(timed, advance))
                    advance = _offset(
                        report, "throughput", [r.records for r in throughput], throughput_total
                    )
                    throughput.append(session.all_at_once(at_once, advance))
                serving = (
                    run_sweep(session, plan.serving, report, limits.send_lag_limit_ms)
                    if plan.serving
                    else None
                )
            session.shutdown()
            shut_down = True
        except ChannelClosed:
            ended = _ended_early(process, "before finishing its requests")
            disclose_progress(ended, done=_done(session), total=plan.total_requests)
            raise ended from None
        except RunFailed as failure:
            failure.logs = combined_logs(_wait_exit(process, 0.0)[0])
            disclose_progress(failure, done=_done(session), total=plan.total_requests)
            raise
        finally:
            if not shut_down:
                # Also after an error of the harness itself: the sandbox never outlives the session.
                process.kill()
                process.wait()
            if channel is not None:
                channel.close()
            listener.close()
        result, _ = _wait_exit(process, SHUTDOWN_GRACE_S)
        return SessionResult(
            load_s=load_s,
            warmup=warmup,
            latency=tuple(latency),
            throughput=tuple(throughput),
            logs=combined_logs(result),
            serving=serving,
        )


def run_sweep(
    session: DecodeSession,
    plan: ServingPlan,
    report: Progress,
    send_lag_limit_ms: float,
) -> ServingSweep:
    """The serving sweep: one offered rate after another, as :class:`RateSweep` decides from
    the SLO attainment of the rounds so far (timing only; every token is verified afterwards).

    A round the harness could not send on schedule (send lag p99 above ``send_lag_limit_ms``) is
    the platform's failure, never the submission's result: the run fails as infrastructure (which
    the worker retries; ``edc eval`` only reports it). The submission cannot cause it (the module
    docstring says why): a flood of its output ends the run as its own protocol error first.

    The progress reports count rounds against the most the sweep could take; when it ends sooner
    the last report says so (done = total), so a progress bar ends full.

    Once ``plan.time_budget_s`` has passed since the sweep began, it searches no further: the
    best rate held so far is confirmed as usual, and that is the result.
    """
    sweep = RateSweep(plan.rates, refine_steps=plan.refine_steps, confirm=plan.confirm)
    rounds: list[ServingRound] = []
    specs = iter(plan.specs)
    most = len(plan.specs) // plan.requests_per_rate
    budget_ends_ns = (
        time.monotonic_ns() + int(plan.time_budget_s * 1e9) if plan.time_budget_s else None
    )
    budget_spent = False
    report("serving", 0, most)
    while (rate := sweep.next_rate()) is not None:
        if len(rounds) == most:
            raise AssertionError("the serving sweep outran the prompts drawn for it")
        batch = [next(specs) for _ in range(plan.requests_per_rate)]
        records, scheduled = session.on_schedule(batch, plan.schedule(rate, len(rounds)))
        served = [
            ServedRequest(scheduled_ns=at, timing=r.timing())
            for at, r in zip(scheduled, records, strict=True)
        ]
        figures = rate_metrics(rate, served, plan.slo)
        lag_p99 = figures["send_lag_ms"]["p99"]
        if lag_p99 > send_lag_limit_ms:
            raise RunFailed(
                FailureReason.INFRASTRUCTURE,
                f"The harness could not send the serving requests on schedule at {rate:g} "
                f"requests/s (send lag p99 {lag_p99:.2f} ms, the limit is "
                f"{send_lag_limit_ms:g} ms): the machine or the harness was late, not the "
                "submission.",
            )
        held = attained(figures, plan.target_share)
        sweep.record(rate, held)
        rounds.append(ServingRound(rate, records, scheduled, figures, held))
        report("serving", len(rounds), most)
        if budget_ends_ns is not None and time.monotonic_ns() >= budget_ends_ns:
            budget_spent = sweep.stop_searching() or budget_spent
    if len(rounds) < most:
        report("serving", len(rounds), len(rounds))  # the sweep is over: the phase is complete
    best, bracket = sweep.result()
    return ServingSweep(tuple(rounds), best, bracket, budget_spent)


def _done(session: DecodeSession | None) -> int:
    return session.requests_done if session is not None else 0


def _offset(
    report: Progress, phase: str, earlier: Sequence[Sequence[object]], total: int
) -> Callable[[int], None]:
    base = sum(len(r) for r in earlier)
    return lambda n: report(phase, base + n, total)


def _wait_exit(process: SandboxProcess, grace_s: float) -> tuple[SandboxResult, bool]:
    """The process's end, killing it after ``grace_s``; True when it had to be killed."""
    deadline = time.monotonic() + grace_s
    while process.poll() and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = process.poll()
    if killed:
        process.kill()
    return process.wait(), killed


def _ended_early(process: SandboxProcess, when: str) -> RunFailed:
    """Why the submission's end went away, judged from how its process ended."""
    result, killed = _wait_exit(process, EXIT_GRACE_S)
    logs = combined_logs(result)
    if result.exit_kind is ExitKind.MEMORY_LIMIT:
        return RunFailed(
            FailureReason.MEMORY_LIMIT,
            f"The submission was killed for exceeding its memory limit {when}.",
            logs=logs,
        )
    if result.exit_kind is ExitKind.TIMEOUT:
        return RunFailed(
            FailureReason.RUN_TIMEOUT,
            f"The submission was stopped at the sandbox's time limit {when}.",
            logs=logs,
        )
    if killed:
        return RunFailed(
            FailureReason.PROTOCOL_ERROR,
            f"The submission closed the channel {when} but kept running.",
            logs=logs,
        )
    if result.exit_kind is ExitKind.EXITED and result.exit_code == 0:
        return RunFailed(
            FailureReason.PROTOCOL_ERROR,
            f"The submission exited normally {when}: it closed the channel too early.",
            logs=logs,
        )
    how = (
        f"exited with code {result.exit_code}"
        if result.exit_kind is ExitKind.EXITED
        else "was killed by a signal"
    )
    return RunFailed(FailureReason.CRASHED, f"The submission {how} {when}.", logs=logs)
