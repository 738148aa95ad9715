"""Choosing a sandbox backend. Never falls back to running code unsandboxed."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from edc.config import Settings
from edc.errors import SandboxUnavailable
from edc.sandbox.base import Sandbox
from edc.sandbox.runtime import DecoderRuntime

# Imported lazily: the docker SDK is only needed where the docker backend is used.
BACKENDS: dict[str, str] = {
    "docker": "edc.sandbox.docker:DockerSandbox",
    "bwrap": "edc.sandbox.bwrap:BwrapSandbox",
}
# `auto` prefers Docker (the production backend) when an engine answers.
AUTO_ORDER = ("docker", "bwrap")


def backend_class(name: str) -> type[Sandbox]:
    module_name, _, class_name = BACKENDS[name].partition(":")
    cls: type[Sandbox] = getattr(importlib.import_module(module_name), class_name)
    return cls


def runtime_backends(runtime: DecoderRuntime | None) -> tuple[str, ...]:
    """The backends that offer ``runtime``: a runtime environment is bubblewrap's, an image
    Docker's; one that names neither (or both), any. Another backend would silently run the
    task's decoders with what the worker has instead of what the task promises."""
    if runtime is None or bool(runtime.env_dir) == bool(runtime.image):
        return AUTO_ORDER
    return ("bwrap",) if runtime.env_dir else ("docker",)


def choose_sandbox(
    settings: Settings, runtime: DecoderRuntime | None = None, private_dirs: Sequence[Path] = ()
) -> Sandbox:
    """The backend ``EDC_SANDBOX`` names, or for ``auto`` the first that can run here, set up to
    offer the decoder ``runtime`` (default: the standard library and numpy) and to keep
    ``private_dirs`` out of reach."""
    kind = settings.sandbox
    names: tuple[str, ...] = AUTO_ORDER if kind == "auto" else (kind,)
    offering = runtime_backends(runtime)
    if kind != "auto" and kind not in offering:
        raise SandboxUnavailable(
            f"The task's runtime ({runtime.describe() if runtime else ''}) is offered by the "
            f"{' or '.join(offering)} sandbox only, but EDC_SANDBOX is {kind}; name it in "
            "task.toml's runtime section (env for bwrap, image for docker) or change EDC_SANDBOX."
        )
    names = tuple(name for name in names if name in offering)
    reasons = []
    for name in names:
        cls = backend_class(name)
        reason = cls.unavailable_reason(settings, runtime)
        if reason is None:
            return cls.from_settings(settings, runtime, private_dirs)
        reasons.append(f"{name}: {reason}")
    raise SandboxUnavailable(
        "No sandbox can run submissions on this machine, so none will be run. " + " ".join(reasons)
    )
