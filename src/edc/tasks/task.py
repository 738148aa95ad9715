"""A competition task: a directory with ``task.toml``, ``model/`` and ``prompts/``.

Usage::

    task = Task.load(Path("src/edc/tasks/tiny"))      # or Task.load(bundled_task_dir())
    task.max_new_tokens, task.epsilon, task.sampling  # SamplingRule(kind, temperature, seed)
    prompts = task.hidden_prompts()                   # list[Prompt(id, text, tokens)]
    plan = task.request_plan(prompts)                 # warm-up; timed, throughput per repeat
    reference = task.load_reference()                 # numpy (or torch) reference model
    task.model_hash()                                 # sha256 over config.json + weights

Layout of ``task.toml`` (every key shown; ``description``, ``[hardware]`` bandwidth and
``[model] reference`` / ``tokenizer`` are optional)::

    name = "tiny-stdlib"
    version = "1"
    description = "..."

    [model]
    dir = "model"            # relative to the task directory
    vocab_size = 256
    tokenizer = "bytes"      # "bytes": prompt text → UTF-8 bytes; "ids": prompts carry "tokens"
    reference = "numpy"      # or "torch" (needs the torch extra)

    [decode]
    max_new_tokens = 64
    epsilon = 0.1            # on the score scale (logit, or logit/T + g)

    [sampling]
    rule = "gumbel"          # or "greedy"
    temperature = 0.8
    seed = 20261128

    [requests]
    warmup = 4               # per scenario, never scored
    timed = 12               # latency scenario, one request at a time, per repeat
    throughput = 16          # throughput scenario, all at once (once per repeat)
    repeats = 3              # timed runs; the score is their median, with a 95% interval

    [limits]
    load_timeout_s = 60
    run_timeout_s = 300
    memory_mb = 2048
    pids = 256
    cpus = 2.0

    [ranking]
    metric = "latency.e2e_per_token_ms.p50"   # one of RANKABLE_METRICS (docs/ranking.md)
    direction = "lower"

    [hardware]
    class = "cpu"                    # the hardware class: "cpu", "h100", ...
    memory_bandwidth_gbps = 12.5     # optional: enables metrics.roofline

    [prompts]                        # optional: where the hidden pool comes from
    hidden_source = "file"           # "file": prompts/hidden.jsonl; "stdlib": generated
    hidden_pool_size = 4096          # prompts generated for a "stdlib" pool
    public_file = "prompts/public.jsonl"  # the public prompts (another task's may be named)

    [plausibility]                   # optional: flags results faster than physics for review
    bytes_per_weight = 1.0           # the most compact weight format the tolerance admits
    memory_gbps = 200                # the fastest memory the weights fit in
    margin = 0.5

    [serving]                        # optional: the serving scenario (see ServingSection)
    rates = [2.0, 4.0, 8.0]          # offered requests/s, tried in order
    requests_per_rate = 16
    burstiness = 1.0                 # gamma shape of the gaps: 1 is Poisson
    ttft_slo_ms = 200
    tpot_slo_ms = 20
    target_share = 0.99
    refine_steps = 2                 # bisections between the last rate held and the first missed
    confirm = 1                      # re-runs of the best rate held
    output_tokens = [16, 64]         # each request's length, drawn in this range
    time_budget_s = 30               # optional: then only the best rate held is confirmed

Prompt files are JSON lines ``{"id": "...", "text": "..."}`` (or ``"tokens": [...]`` for
``tokenizer = "ids"``); ids are unique. Anything wrong raises :class:`edc.errors.InvalidTask`
with a sentence naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edc.config import Settings
from edc.errors import InvalidTask
from edc.sandbox.runtime import MODULE_NAME, REQUIRED_IMPORTS, DecoderRuntime
from edc.tasks.corpus import hidden_snippets
from edc.tasks.reference import LlamaConfig, ReferenceBackend, ReferenceModel
from edc.tasks.sampling import MASK64, SamplingRule
from edc.tasks.tokenizer import encode

BASELINE_DIR = "baseline"
TASK_FILE = "task.toml"
PUBLIC_PROMPTS = "prompts/public.jsonl"
HIDDEN_PROMPTS = "prompts/hidden.jsonl"


@functools.cache  # resolving the path reads the file system, and every upload asks
def bundled_task_dir() -> Path:
    """The task shipped inside the package: the default competition."""
    return Path(__file__).resolve().parent / "tiny"


# --- the schema of task.toml --------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Strict):
    dir: str = "model"
    vocab_size: int = Field(gt=0)
    tokenizer: Literal["bytes", "ids"] = "bytes"
    reference: Literal["numpy", "torch"] = "numpy"
    # The torch reference may run on the worker's GPU (its first) and in bfloat16, so verifying
    # a real-size decode costs seconds; epsilon must then admit the reference's own rounding.
    reference_device: Literal["cpu", "gpu"] = "cpu"
    reference_dtype: Literal["float32", "bfloat16"] = "float32"

    @model_validator(mode="after")
    def _device_and_dtype_need_torch(self) -> ModelSection:
        if self.reference != "torch" and (
            self.reference_device != "cpu" or self.reference_dtype != "float32"
        ):
            raise ValueError('reference_device and reference_dtype need reference = "torch"')
        return self


class DecodeSection(_Strict):
    max_new_tokens: int = Field(gt=0)
    epsilon: float = Field(ge=0)


class SamplingSection(_Strict):
    rule: Literal["greedy", "gumbel"]
    temperature: float = Field(default=1.0, gt=0)
    seed: int = Field(default=0, ge=0, le=MASK64)


class RequestCounts(_Strict):
    warmup: int = Field(ge=0)
    timed: int = Field(gt=0)
    throughput: int = Field(gt=0)
    repeats: int = Field(default=1, gt=0)

    @property
    def total(self) -> int:
        """Every scenario but serving: the throughput set is repeated like the timed one."""
        return self.warmup + (self.timed + self.throughput) * self.repeats


class Limits(_Strict):
    load_timeout_s: float = Field(gt=0)
    run_timeout_s: float = Field(gt=0)
    memory_mb: int = Field(gt=0)
    pids: int = Field(default=256, gt=0)
    cpus: float = Field(default=1.0, gt=0)


# The only figures a task may rank by: ones that holding tokens back or regrouping them into other
# chunks can never improve, so only real decoding speed moves them (docs/ranking.md). Each with
# the direction in which it is better. TTFT, TPOT and ITL are reported, never ranked.
RANKABLE_METRICS: dict[str, Literal["lower", "higher"]] = {
    **{
        f"latency.{family}.{stat}": "lower"
        for family in ("e2e_per_token_ms", "e2e_ms")
        for stat in ("p50", "p90", "p99", "mean")
    },
    "throughput.output_tokens_per_s": "higher",
    # The highest rate served within the SLO, whose E2E bound counts every token when it arrives.
    "serving.max_rate_under_slo": "higher",
}


class Ranking(_Strict):
    metric: str = Field(min_length=1)
    direction: Literal["lower", "higher"]

    @model_validator(mode="after")
    def _only_figures_reshaping_cannot_improve(self) -> Ranking:
        better = RANKABLE_METRICS.get(self.metric)
        if better is None:
            raise ValueError(
                f"a task may not rank by {self.metric!r}: only by figures that holding tokens "
                f"back or reshaping chunks cannot improve ({', '.join(sorted(RANKABLE_METRICS))}); "
                "see docs/ranking.md"
            )
        if better != self.direction:
            raise ValueError(f"{self.metric!r} is better when {better}, not {self.direction}")
        return self


class ServingSection(_Strict):
    """The serving scenario: requests sent on a schedule drawn from a Poisson process, at rising
    offered rates, each request judged against an SLO (docs/submission-format.md).

    ``rates`` are tried in order until one misses the SLO for more than ``1 - target_share`` of
    its requests; ``refine_steps`` bisections then narrow the bracket, and ``confirm`` more runs
    at the best rate held check it. ``burstiness`` is the shape of the gamma gaps (1: Poisson;
    lower: burstier). Each request decodes between ``output_tokens`` tokens (inclusive; at most
    ``decode.max_new_tokens``). A request meets the SLO when its first token arrives within
    ``ttft_slo_ms`` and its last within ``ttft_slo_ms + (N - 1) * tpot_slo_ms``. Once
    ``time_budget_s`` (optional) has passed since the sweep began, no new rate is tried: the best
    rate held so far is confirmed and is the result, so a slow submission cannot stretch the sweep.
    """

    rates: list[float] = Field(min_length=1, max_length=32)
    requests_per_rate: int = Field(gt=0, le=10_000)
    burstiness: float = Field(default=1.0, gt=0, le=100)
    ttft_slo_ms: float = Field(gt=0)
    tpot_slo_ms: float = Field(gt=0)
    target_share: float = Field(default=0.99, gt=0, le=1)
    refine_steps: int = Field(default=2, ge=0, le=10)
    confirm: int = Field(default=1, ge=0, le=5)
    output_tokens: tuple[int, int] | None = None
    time_budget_s: float | None = Field(default=None, gt=0, le=3600)

    @model_validator(mode="after")
    def _rising_positive_rates(self) -> ServingSection:
        if any(r <= 0 for r in self.rates) or any(
            b <= a for a, b in zip(self.rates, self.rates[1:], strict=False)
        ):
            raise ValueError("serving.rates must be positive and strictly rising")
        if (
            self.output_tokens is not None
            and not 1 <= self.output_tokens[0] <= self.output_tokens[1]
        ):
            raise ValueError("serving.output_tokens must be [low, high] with 1 <= low <= high")
        return self

    @property
    def max_rounds(self) -> int:
        """The most offered rates one sweep can measure: each listed or bisected rate, and each
        confirmation of a candidate (see edc.harness.serving.RateSweep)."""
        return (len(self.rates) + self.refine_steps) * (1 + self.confirm)

    @property
    def max_requests(self) -> int:
        return self.max_rounds * self.requests_per_rate


class Plausibility(_Strict):
    """The fastest a decode step can physically be, to flag results for organisers' review.

    Floor per token = every weight read once, stored as compactly as the rules allow
    (``bytes_per_weight``), from the fastest memory the weights fit in (``memory_gbps``: on CPU,
    the last-level cache when the model fits in it). A run whose median per-token time is below
    floor × ``margin`` is flagged ``implausible`` (the margin leaves room for speculative
    decoding, which reads the weights once for several tokens).
    """

    bytes_per_weight: float = Field(gt=0)
    memory_gbps: float = Field(gt=0)
    margin: float = Field(default=0.5, gt=0, le=1)


class Hardware(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # The hardware class the task must be timed on (e.g. "cpu", "h100"): its submissions go only
    # to workers serving that class (EDC_HARDWARE_CLASS).
    kind: str = Field(default="cpu", alias="class", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    memory_bandwidth_gbps: float | None = Field(default=None, gt=0)
    # A worker whose baseline score is off the fleet's median by more than this share stops
    # taking jobs (see edc.worker.drift).
    drift_tolerance: float = Field(default=0.25, gt=0, lt=10)
    # The run-to-run spread (relative standard deviation of the ranked score between evaluations
    # of the same code) assumed until the fleet has measured its own (edc.worker.calibration).
    run_to_run_spread: float = Field(default=0.05, ge=0, lt=1)


class RuntimeSection(_Strict):
    """What a decoder may import besides the standard library (the task's promise), and where
    each sandbox backend finds it: ``env`` for bubblewrap (a venv, prefix or ``pip --target``
    folder built for the worker's Python; relative to the task directory or absolute), ``image``
    for Docker. With neither, a decoder gets the standard library and numpy."""

    imports: tuple[str, ...] = ("numpy",)
    env: str | None = Field(default=None, min_length=1)
    image: str | None = Field(default=None, min_length=1)

    @field_validator("imports")
    @classmethod
    def _names_modules_numpy_included(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not MODULE_NAME.match(name):
                raise ValueError(f"{name!r} is not a module name")
        missing = [name for name in REQUIRED_IMPORTS if name not in value]
        if missing:
            raise ValueError(
                f"imports must include {', '.join(missing)}: the participant helper every "
                "sandbox offers needs it"
            )
        return tuple(dict.fromkeys(value))


class PromptsSection(_Strict):
    """Where an evaluation's hidden prompts come from: always the database's pool, seeded once.

    ``file``: the task's ``prompts/hidden.jsonl`` (kept on the server, imported into the pool the
    first time it is needed; ``edc task import-pool`` replaces it). ``stdlib``: snippets of the
    held-out standard-library files the bundled model never saw, drawn with fresh secret
    randomness when the pool is first needed, so nothing shipped or inside a sandbox can
    regenerate the pool.
    """

    hidden_source: Literal["file", "stdlib"] = "file"
    hidden_pool_size: int = Field(default=4096, gt=0, le=1_000_000)
    # Relative to the task directory: tasks sharing a model may share its public prompts.
    public_file: str = PUBLIC_PROMPTS


class TaskFile(_Strict):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    model: ModelSection
    decode: DecodeSection
    sampling: SamplingSection
    requests: RequestCounts
    limits: Limits
    ranking: Ranking
    hardware: Hardware = Hardware()
    plausibility: Plausibility | None = None
    prompts: PromptsSection = PromptsSection()
    serving: ServingSection | None = None
    runtime: RuntimeSection = RuntimeSection()

    @model_validator(mode="after")
    def _bytes_tokenizer_needs_byte_vocab(self) -> TaskFile:
        if self.model.tokenizer == "bytes" and self.model.vocab_size < 256:
            raise ValueError("the bytes tokenizer needs vocab_size >= 256")
        return self

    @model_validator(mode="after")
    def _serving_fits_the_decode(self) -> TaskFile:
        if self.ranking.metric.startswith("serving.") and self.serving is None:
            raise ValueError(f"ranking by {self.ranking.metric!r} needs a [serving] section")
        lengths = self.serving.output_tokens if self.serving else None
        if lengths is not None and lengths[1] > self.decode.max_new_tokens:
            raise ValueError(
                f"serving.output_tokens goes up to {lengths[1]}, above decode.max_new_tokens "
                f"({self.decode.max_new_tokens})"
            )
        return self


# --- the loaded task ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class RequestPlan:
    """Which prompts go where: disjoint sets, so no answer can be replayed from an earlier one."""

    warmup: tuple[Prompt, ...]
    timed: tuple[tuple[Prompt, ...], ...]  # one tuple per repeat
    throughput: tuple[tuple[Prompt, ...], ...]  # one tuple per repeat
    serving: tuple[Prompt, ...] = ()  # taken in order, requests_per_rate per offered rate


@dataclass(frozen=True)
class Task:
    root: Path
    spec: TaskFile

    # -- convenient views of the spec --

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def model_dir(self) -> Path:
        return (self.root / self.spec.model.dir).resolve()

    @property
    def baseline_dir(self) -> Path | None:
        """The organisers' reference submission, timed by every worker to catch slow hosts."""
        path = self.root / BASELINE_DIR
        return path if path.is_dir() else None

    @property
    def vocab_size(self) -> int:
        return self.spec.model.vocab_size

    @property
    def max_new_tokens(self) -> int:
        return self.spec.decode.max_new_tokens

    @property
    def epsilon(self) -> float:
        return self.spec.decode.epsilon

    @property
    def sampling(self) -> SamplingRule:
        s = self.spec.sampling
        return SamplingRule(kind=s.rule, temperature=s.temperature, seed=s.seed)

    @property
    def requests(self) -> RequestCounts:
        return self.spec.requests

    @property
    def limits(self) -> Limits:
        return self.spec.limits

    @property
    def ranking(self) -> Ranking:
        return self.spec.ranking

    @property
    def hardware(self) -> Hardware:
        return self.spec.hardware

    @property
    def plausibility(self) -> Plausibility | None:
        return self.spec.plausibility

    @property
    def prompt_sources(self) -> PromptsSection:
        return self.spec.prompts

    @property
    def serving(self) -> ServingSection | None:
        return self.spec.serving

    @property
    def serving_lengths(self) -> tuple[int, int]:
        """The range of output tokens a serving request asks for."""
        assert self.serving is not None
        return self.serving.output_tokens or (self.max_new_tokens, self.max_new_tokens)

    @property
    def runtime(self) -> DecoderRuntime:
        """What the task's decoders may import, with the environment's path resolved."""
        r = self.spec.runtime
        env_dir = (self.root / r.env).resolve() if r.env else None
        return DecoderRuntime(imports=r.imports, env_dir=env_dir, image=r.image)

    @property
    def prompts_needed(self) -> int:
        """Prompts one evaluation draws: every scenario's, the serving sweep's most included."""
        return self.requests.total + (self.serving.max_requests if self.serving else 0)

    def with_seed(self, seed: int) -> Task:
        """The task judged with another sampling seed (an evaluation's secret one)."""
        sampling = self.spec.sampling.model_copy(update={"seed": seed})
        return dataclasses.replace(self, spec=self.spec.model_copy(update={"sampling": sampling}))

    def with_requests(self, requests: RequestCounts) -> Task:
        """The task with other request counts (the public check, the drift watch): short runs,
        so without the serving sweep unless the task ranks by it."""
        keep = self.spec.serving if self.ranking.metric.startswith("serving.") else None
        update = {"requests": requests, "serving": keep}
        return dataclasses.replace(self, spec=self.spec.model_copy(update=update))

    @property
    def public_prompts_path(self) -> Path:
        return (self.root / self.spec.prompts.public_file).resolve()

    @property
    def hidden_prompts_path(self) -> Path:
        return self.root / HIDDEN_PROMPTS

    # -- loading --

    @classmethod
    def load(cls, root: Path) -> Task:
        root = Path(root).resolve()
        toml_path = root / TASK_FILE
        if not toml_path.is_file():
            raise InvalidTask(f"{root} is not a task directory: it has no {TASK_FILE}.")
        try:
            raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidTask(f"Cannot read {toml_path}: {exc}.") from exc
        try:
            spec = TaskFile.model_validate(raw)
        except ValidationError as exc:
            raise InvalidTask(f"{toml_path} is invalid: {_describe(exc)}.") from exc
        task = cls(root=root, spec=spec)
        task._check_model()
        return task

    def _check_model(self) -> None:
        config = LlamaConfig.from_json(self.model_dir / "config.json")
        if config.vocab_size != self.vocab_size:
            raise InvalidTask(
                f"task.toml says vocab_size {self.vocab_size} but the model's config.json says "
                f"{config.vocab_size}."
            )
        weights = [
            self.model_dir / "model.safetensors",
            self.model_dir / "model.safetensors.index.json",
        ]
        if not any(p.is_file() for p in weights):
            raise InvalidTask(f"{self.model_dir} holds no model.safetensors.")

    @property
    def max_positions(self) -> int:
        return LlamaConfig.from_json(self.model_dir / "config.json").max_position_embeddings

    def public_prompts(self) -> list[Prompt]:
        return self.load_prompts(self.public_prompts_path)

    def hidden_prompts(self) -> list[Prompt]:
        """The organiser's hidden prompts file, the source of a ``file`` pool (server side only)."""
        return self.load_prompts(self.hidden_prompts_path)

    def has_hidden_prompts(self) -> bool:
        return self.hidden_prompts_path.is_file()

    def new_hidden_pool(self) -> list[Prompt]:
        """A hidden pool from the task's source: what ``edc.tasks.pool`` seeds the database with
        (and what ``edc eval`` draws from when an organiser evaluates on hidden prompts locally)."""
        source = self.prompt_sources
        if source.hidden_source == "file":
            if not self.has_hidden_prompts():
                raise InvalidTask(
                    f"The task {self.name!r} has no hidden prompt pool yet and no "
                    f"{self.hidden_prompts_path} to seed it from; import one with "
                    "`edc task import-pool FILE`."
                )
            return self.hidden_prompts()
        limit = self.max_positions - self.max_new_tokens
        # The operating system's randomness: no seed anywhere regenerates this pool.
        public = [prompt.text for prompt in self.public_prompts()]
        texts = hidden_snippets(source.hidden_pool_size, random.SystemRandom(), public=public)
        return [
            Prompt(f"h{i:06d}", text, tuple(encode(text))[:limit]) for i, text in enumerate(texts)
        ]

    def load_prompts(self, path: Path) -> list[Prompt]:
        """Read and check a prompts file: unique ids, tokens in the vocabulary, room to decode."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidTask(f"Cannot read the prompts file {path}: {exc}.") from exc
        prompts: list[Prompt] = []
        seen: set[str] = set()
        limit = self.max_positions - self.max_new_tokens
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            prompt = self._parse_prompt(line, where)
            if prompt.id in seen:
                raise InvalidTask(f"{where}: the id {prompt.id!r} is used twice.")
            seen.add(prompt.id)
            if not prompt.tokens:
                raise InvalidTask(f"{where}: the prompt is empty.")
            if len(prompt.tokens) > limit:
                raise InvalidTask(
                    f"{where}: the prompt has {len(prompt.tokens)} tokens; with "
                    f"max_new_tokens {self.max_new_tokens} the model's {self.max_positions} "
                    f"positions allow at most {limit}."
                )
            if not all(0 <= t < self.vocab_size for t in prompt.tokens):
                raise InvalidTask(f"{where}: a token id lies outside [0, {self.vocab_size}).")
            prompts.append(prompt)
        if not prompts:
            raise InvalidTask(f"The prompts file {path} holds no prompts.")
        return prompts

    def _parse_prompt(self, line: str, where: str) -> Prompt:
        try:
            row: Any = json.loads(line)
        except ValueError as exc:
            raise InvalidTask(f"{where} is not JSON: {exc}.") from exc
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not row["id"]:
            raise InvalidTask(f'{where} must be an object with a non-empty string "id".')
        text = row.get("text", "")
        if not isinstance(text, str):
            raise InvalidTask(f'{where}: "text" must be a string.')
        if "tokens" in row:
            tokens = row["tokens"]
            if not isinstance(tokens, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in tokens
            ):
                raise InvalidTask(f'{where}: "tokens" must be a list of integers.')
            return Prompt(id=row["id"], text=text, tokens=tuple(tokens))
        if self.spec.model.tokenizer != "bytes":
            raise InvalidTask(f'{where}: this task\'s prompts must carry "tokens".')
        if "text" not in row:
            raise InvalidTask(f'{where} has neither "text" nor "tokens".')
        return Prompt(id=row["id"], text=text, tokens=tuple(encode(text)))

    def request_plan(self, prompts: list[Prompt]) -> RequestPlan:
        """Split prompts in order: warm-up, then per repeat a timed set and a throughput set,
        then the serving sweep's."""
        counts = self.requests
        if len(prompts) < self.prompts_needed:
            extra = f" + {self.serving.max_requests} serving" if self.serving else ""
            raise InvalidTask(
                f"The task needs {self.prompts_needed} prompts ({counts.warmup} warm-up + "
                f"({counts.timed} timed + {counts.throughput} throughput) × {counts.repeats} "
                f"repeats{extra}) but the file has {len(prompts)}."
            )
        rest = iter(prompts)

        def take(n: int) -> tuple[Prompt, ...]:
            return tuple(next(rest) for _ in range(n))

        warmup = take(counts.warmup)
        timed = tuple(take(counts.timed) for _ in range(counts.repeats))
        throughput = tuple(take(counts.throughput) for _ in range(counts.repeats))
        serving = take(self.serving.max_requests) if self.serving else ()
        return RequestPlan(warmup=warmup, timed=timed, throughput=throughput, serving=serving)

    # -- the model --

    def content_hash(self) -> str:
        """sha256 over task.toml's values and the model (:meth:`model_hash`): the task's
        identity, which results are comparable by (what a changed prompt count, limit or weight
        would move; a comment would not)."""
        return _content_digest(self.root, self.model_hash())

    def model_hash(self) -> str:
        """sha256 over config.json and the weight files, in name order: the reference's identity."""
        digest = hashlib.sha256()
        files = sorted(
            p
            for p in self.model_dir.iterdir()
            if p.name == "config.json" or ".safetensors" in p.name
        )
        for path in files:
            digest.update(path.name.encode() + b"\0")
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()

    def load_reference(self, *, float64: bool = False, device: str = "cpu") -> ReferenceBackend:
        """The trusted reference this task names (numpy unless task.toml says torch); the torch
        one on ``device`` (a torch device, e.g. ``cuda:1``) in the task's reference dtype, or in
        float64 when asked (for checking checks)."""
        model = self.spec.model
        if model.reference == "torch":
            from edc.tasks.torch_reference import TorchReference

            dtype = "float64" if float64 else model.reference_dtype
            return TorchReference.load(self.model_dir, dtype=dtype, device=device)
        return ReferenceModel.load(self.model_dir, dtype=np.float64 if float64 else np.float32)


def task_dir(settings: Settings) -> Path:
    """The competition's task directory: ``EDC_TASK_DIR``, else the bundled task."""
    return settings.task_dir if settings.task_dir is not None else bundled_task_dir()


def load_task(settings: Settings, override: Path | None = None) -> Task:
    """The task to judge against: ``override``, else ``EDC_TASK_DIR``, else the bundled one."""
    return Task.load(override if override is not None else task_dir(settings))


def task_hardware_class(settings: Settings) -> str:
    """The hardware class of the competition's task: the class new submissions get and workers
    serve unless told otherwise."""
    return hardware_class_of(task_dir(settings))


def hardware_class_of(root: Path) -> str:
    """The hardware class of the task at ``root``. The one place it is computed."""
    return task_at(root).spec.hardware.kind


def worker_class(settings: Settings, task: Task) -> str:
    """The hardware class a worker serves: ``EDC_HARDWARE_CLASS``, else its configured task's."""
    return settings.hardware_class or task.spec.hardware.kind


def content_hash_of(root: Path) -> str:
    """:meth:`Task.content_hash` of the task at ``root``, its model's hash kept until a model file
    changes (hashing a real model's weights takes seconds)."""
    return _content_digest(root, model_hash_of(root))


def bytes_content_hash_of(root: Path) -> str:
    """The content hash as earlier releases computed it, over task.toml's bytes: results
    they stamped are of the same task while those bytes are unchanged (see
    ``services.rescore.Versions``). Kept for one release's upgrade, then to be removed."""
    digest = hashlib.sha256((root / TASK_FILE).read_bytes())
    digest.update(model_hash_of(root).encode())
    return digest.hexdigest()


def model_hash_of(root: Path) -> str:
    """:meth:`Task.model_hash` of the task at ``root``, computed again only when a model file
    changes."""
    model = task_at(root).model_dir
    stamps = tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(model.iterdir())
    )
    return _model_hash(root, stamps)


@functools.lru_cache(maxsize=16)
def _model_hash(root: Path, _model_stamps: tuple[object, ...]) -> str:
    return task_at(root).model_hash()


def _content_digest(root: Path, model_hash: str) -> str:
    # task.toml's values, not its bytes: a comment or a layout edit changes nothing measured, so
    # it must not make every result of the task stale.
    values = tomllib.loads((root / TASK_FILE).read_text(encoding="utf-8"))
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode())
    digest.update(model_hash.encode())
    return digest.hexdigest()


def task_at(root: Path) -> Task:
    """The task at ``root``, loaded again only when its task.toml changes: what the portal asks
    of tasks on every upload and page (hardware class, ranking, facts)."""
    try:
        stamp = (root / TASK_FILE).stat().st_mtime_ns
    except OSError:
        stamp = None  # let loading say what is wrong
    return _task_at(root, stamp)


@functools.lru_cache(maxsize=16)
def _task_at(root: Path, _stamp: int | None) -> Task:
    return Task.load(root)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
