"""The cheat submissions: each one does no less work than honest kvcache, and tries to look faster
(or to learn what it must not) by one mechanism. ``bench/fairness.py`` prints their scores next to
honest kvcache's; ``test_cheats.py`` keeps each one from working."""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
KVCACHE = REPO / "examples" / "kvcache" / "submission.py"

# kvcache's exact work per request, but every token is held back and sent in one chunk at the end.
# Under the old ranked figure (TPOT p50) this scored 0.000 ms.
BURST = """

class Decoder:
    def __init__(self, model_dir):
        self.model = Llama(model_dir)

    def step(self, requests):
        for request in requests:
            cache = self.model.new_cache(len(request.prompt) + request.max_new_tokens)
            logits = self.model.forward(request.prompt, cache)
            sampler = sampler_for(request)
            tokens = []
            for step in range(request.max_new_tokens):
                tokens.append(sampler.choose(logits, step=step))
                if step + 1 < request.max_new_tokens:
                    logits = self.model.forward([tokens[-1]], cache)
            yield request.id, tokens
"""

# kvcache's work, regrouped into bursts of 8 sent back to back.
CHUNKED = BURST.replace(
    "            yield request.id, tokens\n",
    "            for at in range(0, len(tokens), 8):\n"
    "                yield request.id, tokens[at : at + 8]\n",
)

# Answers computed before the request: with the task's public seed and the ids a predictable plan
# would use, every answer could be decoded during the untimed load. The seed is now secret and
# sent only with each generate, and ids are opaque: the precomputed answers are wrong.
PRECOMPUTED = """

PUBLIC_SEED = 20261128  # task.toml's


class Decoder:
    def __init__(self, model_dir):
        self.model = Llama(model_dir)
        self.count = 0

    def step(self, requests):
        for request in requests:
            guess = dict(request.sampling, seed=PUBLIC_SEED)
            sampler = Sampler(guess, f"hid-{self.count:03d}")
            self.count += 1
            cache = self.model.new_cache(len(request.prompt) + request.max_new_tokens)
            logits = self.model.forward(request.prompt, cache)
            tokens = []
            for step in range(request.max_new_tokens):
                tokens.append(sampler.choose(logits, step=step))
                if step + 1 < request.max_new_tokens:
                    logits = self.model.forward([tokens[-1]], cache)
            yield request.id, tokens
"""


def python_cheat(directory: Path, extra: str) -> Path:
    """kvcache's model code followed by the cheat's own Decoder."""
    directory.mkdir(parents=True, exist_ok=True)
    source = KVCACHE.read_text().replace(
        "from edc_participant import load_config, load_weights, sampler_for",
        "from edc_participant import Sampler, load_config, load_weights, sampler_for",
    )
    (directory / "submission.py").write_text(source + textwrap.dedent(extra))
    return directory


# Spoken directly over the protocol: reads the load message, then one deeply nested line.
NESTED_JSON = """\
send({"op": "ready"})
message = receive()
send_raw(b"[" * 200_000 + b"\\n")
receive()
"""

# Looks for the platform from inside: its package, the task's files, the data directory.
SNOOP = """\
import importlib.util
found = []
for path in PATHS:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        found.append(path)
    except OSError:
        pass
for name in ("edc", "fastapi", "sqlalchemy"):
    if importlib.util.find_spec(name) is not None:
        found.append("import " + name)
print("SNOOP " + json.dumps(found), flush=True)
send({"op": "error", "message": "snooped"})
"""
