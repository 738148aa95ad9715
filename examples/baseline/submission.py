"""Baseline: recompute the whole sequence at every step, one request after another.

The simplest correct decoder: no KV cache, no batching. Each step runs the model over
prompt + everything generated so far and keeps only the last position's logits. It is here to be
beaten (see ../kvcache and ../batched).

The harness's shim imports this file inside the sandbox, builds ``Decoder(model_dir)`` once and
calls ``step(requests)`` until every request has its tokens. ``edc_participant`` is the helper the
platform puts in every sandbox: a safetensors reader and the task's sampling rule.
"""

from __future__ import annotations

import math

import numpy as np
from edc_participant import load_config, load_weights, sampler_for


class Llama:
    """A Hugging Face-layout Llama forward pass in numpy (float32), no cache."""

    def __init__(self, model_dir: str) -> None:
        c = load_config(model_dir)
        w = load_weights(model_dir)
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.eps = c.get("rms_norm_eps", 1e-6)
        theta = c.get("rope_theta", 10000.0)

        def t(name):
            return np.ascontiguousarray(w[name], dtype=np.float32)

        self.embed = t("model.embed_tokens.weight")
        lm_head = w.get("lm_head.weight")
        self.lm_head = t("lm_head.weight").T.copy() if lm_head is not None else self.embed.T.copy()
        self.norm = t("model.norm.weight")
        self.layers = []
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            self.layers.append(
                {
                    "in_norm": t(p + "input_layernorm.weight"),
                    "qkv": np.concatenate(
                        [t(p + f"self_attn.{x}_proj.weight").T for x in "qkv"], axis=1
                    ),
                    "o": t(p + "self_attn.o_proj.weight").T.copy(),
                    "post_norm": t(p + "post_attention_layernorm.weight"),
                    "gate_up": np.concatenate(
                        [t(p + "mlp.gate_proj.weight").T, t(p + "mlp.up_proj.weight").T], axis=1
                    ),
                    "down": t(p + "mlp.down_proj.weight").T.copy(),
                }
            )
        self.inv_freq = 1.0 / theta ** (np.arange(0, self.head_dim, 2) / self.head_dim)

    def rms(self, x, weight):
        return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps))

    def rope(self, x, positions):
        angles = positions.astype(np.float32)[:, None] * self.inv_freq.astype(np.float32)[None]
        angles = np.concatenate([angles, angles], axis=-1)
        cos, sin = np.cos(angles), np.sin(angles)
        half = x.shape[-1] // 2
        return x * cos + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin

    def last_logits(self, tokens):
        n = len(tokens)
        hd, h, kvh = self.head_dim, self.heads, self.kv_heads
        group = h // kvh
        positions = np.arange(n)
        causal = np.triu(np.full((n, n), -np.inf, dtype=np.float32), k=1)
        x = self.embed[np.asarray(tokens)]
        for layer in self.layers:
            qkv = self.rms(x, layer["in_norm"]) @ layer["qkv"]
            q = self.rope(qkv[:, : h * hd].reshape(n, h, hd).transpose(1, 0, 2), positions)
            k = self.rope(
                qkv[:, h * hd : (h + kvh) * hd].reshape(n, kvh, hd).transpose(1, 0, 2), positions
            )
            v = qkv[:, (h + kvh) * hd :].reshape(n, kvh, hd).transpose(1, 0, 2)
            # Query head j reads key/value head j // group: one matrix product per kv head.
            att = q.reshape(kvh, group * n, hd) @ k.transpose(0, 2, 1) / math.sqrt(hd)
            att = att.reshape(kvh, group, n, n)
            att = att + causal
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            y = (att.reshape(kvh, group * n, n) @ v).reshape(kvh, group, n, hd)
            y = y.transpose(2, 0, 1, 3).reshape(n, h * hd)
            x = x + y @ layer["o"]
            gate, up = np.split(self.rms(x, layer["post_norm"]) @ layer["gate_up"], 2, axis=-1)
            x = x + (gate * (0.5 + 0.5 * np.tanh(0.5 * gate)) * up) @ layer["down"]
        return self.rms(x[-1], self.norm) @ self.lm_head


class Decoder:
    def __init__(self, model_dir: str) -> None:
        self.model = Llama(model_dir)

    def step(self, requests):
        """One new token for every pending request."""
        for request in requests:
            logits = self.model.last_logits(request.prompt + request.generated)
            token = sampler_for(request).choose(logits, step=len(request.generated))
            yield request.id, [token]
