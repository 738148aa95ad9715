"""KV cache: run the prompt once, then one position per step through cached keys and values.

Each request gets its own cache (keys and values of every layer, preallocated for prompt +
max_new_tokens positions). A step costs one row through the model instead of the whole sequence.
Requests are served one after another; ../batched serves them together.
"""

from __future__ import annotations

import math

import numpy as np
from edc_participant import load_config, load_weights, sampler_for


class Llama:
    """A Hugging Face-layout Llama in numpy (float32) with a per-request KV cache."""

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

    def new_cache(self, capacity):
        shape = (len(self.layers), 2, self.kv_heads, capacity, self.head_dim)
        return {"kv": np.zeros(shape, dtype=np.float32), "length": 0}

    def rms(self, x, weight):
        return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps))

    def rope(self, x, positions):
        angles = positions.astype(np.float32)[:, None] * self.inv_freq.astype(np.float32)[None]
        angles = np.concatenate([angles, angles], axis=-1)
        cos, sin = np.cos(angles), np.sin(angles)
        half = x.shape[-1] // 2
        return x * cos + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin

    def forward(self, tokens, cache):
        """Logits of the last of ``tokens``, which follow what ``cache`` holds (extended here)."""
        n, start = len(tokens), cache["length"]
        total = start + n
        hd, h, kvh = self.head_dim, self.heads, self.kv_heads
        group = h // kvh
        positions = np.arange(start, total)
        mask = np.where(np.arange(total)[None, :] > positions[:, None], -np.inf, 0.0)
        mask = mask.astype(np.float32)
        x = self.embed[np.asarray(tokens)]
        for li, layer in enumerate(self.layers):
            qkv = self.rms(x, layer["in_norm"]) @ layer["qkv"]
            q = self.rope(qkv[:, : h * hd].reshape(n, h, hd).transpose(1, 0, 2), positions)
            kv = cache["kv"][li]
            kv[0, :, start:total] = self.rope(
                qkv[:, h * hd : (h + kvh) * hd].reshape(n, kvh, hd).transpose(1, 0, 2), positions
            )
            kv[1, :, start:total] = qkv[:, (h + kvh) * hd :].reshape(n, kvh, hd).transpose(1, 0, 2)
            keys, values = kv[0, :, :total], kv[1, :, :total]
            # Query head j reads key/value head j // group: one matrix product per kv head.
            att = q.reshape(kvh, group * n, hd) @ keys.transpose(0, 2, 1)
            att = att.reshape(kvh, group, n, total)
            att = att / math.sqrt(hd) + mask
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            y = (att.reshape(kvh, group * n, total) @ values).reshape(kvh, group, n, hd)
            y = y.transpose(2, 0, 1, 3).reshape(n, h * hd)
            x = x + y @ layer["o"]
            gate, up = np.split(self.rms(x, layer["post_norm"]) @ layer["gate_up"], 2, axis=-1)
            x = x + (gate * (0.5 + 0.5 * np.tanh(0.5 * gate)) * up) @ layer["down"]
        cache["length"] = total
        return self.rms(x[-1], self.norm) @ self.lm_head


class Decoder:
    def __init__(self, model_dir: str) -> None:
        self.model = Llama(model_dir)
        self.state = {}  # request id -> (cache, sampler, logits for the next token)

    def step(self, requests):
        """One new token for every pending request."""
        live = {r.id for r in requests}
        for gone in self.state.keys() - live:
            del self.state[gone]
        for request in requests:
            if request.id not in self.state:
                cache = self.model.new_cache(len(request.prompt) + request.max_new_tokens)
                logits = self.model.forward(request.prompt, cache)
                self.state[request.id] = [cache, sampler_for(request), logits]
            entry = self.state[request.id]
            cache, sampler, logits = entry
            token = sampler.choose(logits, step=len(request.generated))
            yield request.id, [token]
            if request.remaining > 0:  # the shim has added the token to request.generated
                entry[2] = self.model.forward([token], cache)
