"""Train the bundled tiny model: a ~3M-parameter Llama on the Python standard library's own sources.

Usage (needs the ``torch`` extra; CPU is enough)::

    python tools/train_tiny_task.py --out src/edc/tasks/tiny/model --minutes 9 \\
        --prompts-out src/edc/tasks/tiny/prompts
    python tools/train_tiny_task.py --report-only src/edc/tasks/tiny/model  # quality only

The corpus is every ``.py`` file of the interpreter's standard library (``sys.base_prefix``), minus
``site-packages`` and the test suites, so every machine with Python 3.11 can rebuild it. Files are
split into train / held-out by a hash of their relative path; prompts come only from held-out files,
public and hidden from different files.

Writes ``config.json`` + ``model.safetensors`` (fp32, Hugging Face Llama layout, tied embeddings)
and ``training_report.json``: steps, bytes seen, held-out nats/byte, and the quality figures that
show the model makes a meaningful contest (median top-1/top-2 logit gap; how often a 3-gram lookup
predicts the next token under greedy and under the task's hashed-Gumbel rule).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edc.tasks.corpus import load_corpus, write_prompts

CONTEXT = 256
REPORT_NAME = "training_report.json"


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    vocab_size: int = 256
    max_position_embeddings: int = CONTEXT
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def hf_config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": True,
            "torch_dtype": "float32",
            "bos_token_id": None,
            "eos_token_id": None,
        }


# --- corpus -------------------------------------------------------------------------------------


# --- training (torch) ---------------------------------------------------------------------------


def _build_torch_model(shape: ModelShape) -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class RMSNorm(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            var = x.pow(2).mean(-1, keepdim=True)
            out: torch.Tensor = self.weight * (x * torch.rsqrt(var + shape.rms_norm_eps))
            return out

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            hd = shape.head_dim
            self.q_proj = nn.Linear(shape.hidden_size, shape.num_attention_heads * hd, bias=False)
            self.k_proj = nn.Linear(shape.hidden_size, shape.num_key_value_heads * hd, bias=False)
            self.v_proj = nn.Linear(shape.hidden_size, shape.num_key_value_heads * hd, bias=False)
            self.o_proj = nn.Linear(shape.num_attention_heads * hd, shape.hidden_size, bias=False)

        def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            hd = shape.head_dim
            q = self.q_proj(x).view(b, t, -1, hd).transpose(1, 2)
            k = self.k_proj(x).view(b, t, -1, hd).transpose(1, 2)
            v = self.v_proj(x).view(b, t, -1, hd).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            out: torch.Tensor = self.o_proj(y.transpose(1, 2).reshape(b, t, -1))
            return out

    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate_proj = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
            self.up_proj = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
            self.down_proj = nn.Linear(shape.intermediate_size, shape.hidden_size, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
            return out

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_layernorm = RMSNorm(shape.hidden_size)
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(shape.hidden_size)
            self.mlp = MLP()

        def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            out: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
            return out

    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(shape.vocab_size, shape.hidden_size)
            self.layers = nn.ModuleList(Layer() for _ in range(shape.num_hidden_layers))
            self.norm = RMSNorm(shape.hidden_size)

    class TinyLlama(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Inner()
            hd = shape.head_dim
            inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
            angles = torch.outer(torch.arange(shape.max_position_embeddings).float(), inv_freq)
            angles = torch.cat((angles, angles), dim=-1)
            self.register_buffer("cos", angles.cos(), persistent=False)
            self.register_buffer("sin", angles.sin(), persistent=False)
            self.apply(self._init)
            layers: list[Any] = list(self.model.layers)
            for layer in layers:
                # Residual branches start small so depth does not blow up the stream.
                std = 0.02 / math.sqrt(2 * shape.num_hidden_layers)
                nn.init.normal_(layer.self_attn.o_proj.weight, std=std)
                nn.init.normal_(layer.mlp.down_proj.weight, std=std)

        @staticmethod
        def _init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            t = tokens.shape[1]
            x = self.model.embed_tokens(tokens)
            buffers: dict[str, torch.Tensor] = dict(self.named_buffers())
            cos, sin = buffers["cos"][:t], buffers["sin"][:t]
            for layer in self.model.layers:
                x = layer(x, cos, sin)
            x = self.model.norm(x)
            logits: torch.Tensor = x @ self.model.embed_tokens.weight.T
            return logits

    return TinyLlama()


def _batch(data: np.ndarray, rng: np.random.Generator, batch: int, seq: int) -> Any:
    import torch

    starts = rng.integers(0, len(data) - seq - 1, size=batch)
    windows = np.stack([data[s : s + seq + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(windows)


def _held_out_nats_per_byte(model: Any, held: np.ndarray, *, windows: int = 48) -> float:
    import torch
    from torch.nn import functional as F

    rng = np.random.default_rng(1234)
    batch = _batch(held, rng, windows, CONTEXT)
    model.eval()
    with torch.no_grad():
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    model.train()
    return float(loss)


def train(out_dir: Path, *, minutes: float, threads: int = 2, seed: int = 0) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file
    from torch.nn import functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    shape = ModelShape()
    train_bytes, held_bytes, _ = load_corpus()
    train_data = np.frombuffer(train_bytes, dtype=np.uint8)
    held_data = np.frombuffer(held_bytes, dtype=np.uint8)
    model = _build_torch_model(shape)
    params = sum(p.numel() for p in model.parameters())
    peak_lr, min_lr, warmup_steps, batch, seq = 3e-3, 2e-4, 30, 24, CONTEXT
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=peak_lr,
        betas=(0.9, 0.95),
    )
    rng = np.random.default_rng(seed)
    budget_s = minutes * 60.0
    started = time.monotonic()
    step, loss_ema, log = 0, float("nan"), []
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= budget_s:
            break
        # The schedule follows wall time, so a shorter budget still ends on a cooled-down model.
        progress = elapsed / budget_s
        lr = min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * progress))
        lr *= min(1.0, (step + 1) / warmup_steps)
        for group in optim.param_groups:
            group["lr"] = lr
        tokens = _batch(train_data, rng, batch, seq)
        logits = model(tokens[:, :-1])
        # Any: torch's backward() carries no annotations.
        loss: Any = F.cross_entropy(logits.reshape(-1, shape.vocab_size), tokens[:, 1:].reshape(-1))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        value = float(loss.item())
        loss_ema = value if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * value
        step += 1
        if step % 25 == 0:
            entry = {"step": step, "elapsed_s": round(elapsed, 1), "train_loss": round(loss_ema, 4)}
            log.append(entry)
            sys.stdout.write(json.dumps(entry) + "\n")
            sys.stdout.flush()
    held_loss = _held_out_nats_per_byte(model, held_data)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(shape.hf_config(), indent=2) + "\n")
    state = {
        k: v.detach().to(torch.float32).contiguous()
        for k, v in model.state_dict().items()
        if k.startswith("model.")
    }
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    # The sandboxed submission runs as another user and must be able to read the weights.
    (out_dir / "model.safetensors").chmod(0o644)
    return {
        "parameters": params,
        "shape": asdict(shape),
        "corpus": {
            "source": "python stdlib .py files (no site-packages, no tests)",
            "python": sys.version.split()[0],
            "train_bytes": len(train_bytes),
            "held_out_bytes": len(held_bytes),
        },
        "steps": step,
        "batch": batch,
        "sequence": seq,
        "bytes_seen": step * batch * seq,
        "wall_minutes": round((time.monotonic() - started) / 60, 2),
        "threads": threads,
        "torch": torch.__version__,
        "final_train_loss": round(loss_ema, 4),
        "held_out_nats_per_byte": round(held_loss, 4),
        "log": log,
    }


# --- quality figures (numpy reference, so they describe exactly what the contest sees) ----------


def _three_gram_hit_rate(
    sequences: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]]
) -> float:
    """Share of generated tokens that the most frequent follower of the previous two tokens
    (counted over the prompt and everything generated before) predicts."""
    hits = total = 0
    for prompt, generated in zip(prompts, sequences, strict=True):
        seq = list(prompt)
        table: dict[tuple[int, int], Counter[int]] = {}
        for a, b, c in zip(seq, seq[1:], seq[2:], strict=False):
            table.setdefault((a, b), Counter())[c] += 1
        for tok in generated:
            key = (seq[-2], seq[-1])
            seen = table.get(key)
            # An unseen context predicts nothing: it counts as a miss.
            hits += int(seen is not None and seen.most_common(1)[0][0] == tok)
            total += 1
            table.setdefault(key, Counter())[tok] += 1
            seq.append(tok)
    return hits / total if total else 0.0


def _bf16_round(weights: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """float32 → nearest bfloat16 (ties to even) → float32: what a bf16 submission holds."""
    out = {}
    for name, w in weights.items():
        bits = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
        rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
        out[name] = ((bits + rounding) & np.uint32(0xFFFF0000)).view(np.float32)
    return out


def _random_weights(
    like: dict[str, np.ndarray[Any, Any]], seed: int = 0
) -> dict[str, np.ndarray[Any, Any]]:
    """Weights as initialised before training (normal, std 0.02; norms one), shaped as given."""
    rng = np.random.default_rng(seed)
    return {
        name: (
            np.ones_like(w)
            if name.endswith("norm.weight")
            else rng.normal(scale=0.02, size=w.shape).astype(np.float32)
        )
        for name, w in like.items()
    }


def _decode_figures(
    model: Any, rows: list[dict[str, Any]], *, max_new_tokens: int, temperature: float, seed: int
) -> tuple[dict[str, Any], list[list[int]]]:
    from edc.tasks.sampling import SamplingRule, greedy
    from edc.tasks.tokenizer import encode

    prompts = [encode(r["text"]) for r in rows]
    rule = SamplingRule(kind="gumbel", temperature=temperature, seed=seed)
    greedy_out = [model.generate(p, max_new_tokens, greedy()) for p in prompts]
    gumbel_out = [
        model.generate(p, max_new_tokens, rule.for_request(r["id"]))
        for p, r in zip(prompts, rows, strict=True)
    ]
    gaps: list[float] = []
    for p, g in zip(prompts, gumbel_out, strict=True):
        logits = model.forward_all(list(p) + list(g))[len(p) - 1 : -1]
        top2 = np.sort(logits, axis=-1)[:, -2:]
        gaps.extend((top2[:, 1] - top2[:, 0]).tolist())
    figures = {
        "median_top1_top2_logit_gap": round(float(np.median(gaps)), 3),
        "three_gram_hit_rate_greedy": round(_three_gram_hit_rate(greedy_out, prompts), 3),
        "three_gram_hit_rate_gumbel": round(_three_gram_hit_rate(gumbel_out, prompts), 3),
        "sample_greedy": bytes(greedy_out[0]).decode("utf-8", "replace"),
        "sample_gumbel": bytes(gumbel_out[0]).decode("utf-8", "replace"),
    }
    return figures, gumbel_out


def quality_report(
    model_dir: Path,
    prompts_file: Path,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    seed: int = 20261128,
    epsilon: float = 0.1,
    count: int = 24,
) -> dict[str, Any]:
    """Median top-1/top-2 logit gap along hashed-Gumbel outputs and 3-gram predictability of
    greedy and hashed-Gumbel outputs, for the trained model and for its random initialisation;
    and how far float64 and bf16-weight decodes stray from the float32 reference (the ε case)."""
    from edc.harness.verify import RequestOutput, Verifier
    from edc.tasks.reference import LlamaConfig, ReferenceModel, load_weights
    from edc.tasks.sampling import SamplingRule
    from edc.tasks.tokenizer import encode

    rows = [json.loads(line) for line in prompts_file.read_text().splitlines() if line.strip()]
    rows = rows[:count]
    config = LlamaConfig.from_json(model_dir / "config.json")
    weights = load_weights(model_dir)
    decode: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": seed,
    }
    trained, trained_out = _decode_figures(ReferenceModel(config, weights), rows, **decode)
    random_init, _ = _decode_figures(
        ReferenceModel(config, _random_weights(weights)), rows, **decode
    )

    rule = SamplingRule(kind="gumbel", temperature=temperature, seed=seed)
    verifier = Verifier(
        ReferenceModel(config, weights), rule, epsilon=epsilon, max_new_tokens=max_new_tokens
    )
    prompts = [encode(r["text"]) for r in rows]
    strays: dict[str, Any] = {}
    for label, variant in (
        ("float64", ReferenceModel(config, weights, dtype=np.float64)),
        ("bf16_weights", ReferenceModel(config, _bf16_round(weights))),
    ):
        outputs = [
            RequestOutput(
                r["id"], p, variant.generate(p, max_new_tokens, rule.for_request(r["id"]))
            )
            for p, r in zip(prompts, rows, strict=True)
        ]
        expected = {r["id"]: out for r, out in zip(rows, trained_out, strict=True)}
        report = verifier.verify(outputs, expected)
        strays[label] = {
            "max_gap": round(report.max_gap, 6),
            "passes_epsilon": report.correct,
            "exact_match_rate": round(report.exact_match_rate or 0.0, 3),
        }
    return {
        "prompts": len(rows),
        **decode,
        "epsilon": epsilon,
        "trained": trained,
        "random_init": random_init,
        "against_float32_reference": strays,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python tools/train_tiny_task.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, help="model directory to write")
    parser.add_argument("--minutes", type=float, default=9.0, help="wall-clock training budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--prompts-out", type=Path, help="also write public/hidden prompt files here"
    )
    parser.add_argument(
        "--report-only", type=Path, help="only (re)measure quality of this model dir"
    )
    args = parser.parse_args(argv)
    if args.report_only is not None:
        model_dir: Path = args.report_only
        report_path = model_dir / REPORT_NAME
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    else:
        if args.out is None:
            parser.error("--out is required unless --report-only is given")
        model_dir = args.out
        report = train(model_dir, minutes=args.minutes, threads=args.threads)
        (model_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    if args.prompts_out is not None:
        write_prompts(args.prompts_out, load_corpus()[2])
    prompts_dir = args.prompts_out or model_dir.parent / "prompts"
    if (prompts_dir / "public.jsonl").exists():
        report["quality"] = quality_report(model_dir, prompts_dir / "public.jsonl")
        (model_dir / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(json.dumps({k: v for k, v in report.items() if k != "log"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
