"""PyTorch: every pending request advances in one forward pass per step, through a static KV cache.

Needs a task whose runtime offers torch (see ../README.md); it runs on the CPU, or on a CUDA GPU
when the sandbox has one. Weights come from ``edc_participant.load_weights`` and are held in
bfloat16 on a GPU, float32 on a CPU (bfloat16 matrix products are slow there). The residual
stream, the norms, rotary embeddings, the softmax and the output projection stay in float32 on
both: the logits, which the sampling rule reads directly, keep float32 precision.

The cache is a fixed pool of slots, allocated once: per layer, keys and values of shape
(slots, kv heads, context, head dim). A request takes the lowest free slot when it arrives, is
prefilled there on its own (one pass over its prompt), and from then on one step runs the single
new position of every slot up to the highest one in use, as one batch: the projections and the MLP
read each weight once for the whole batch, and attention reads each slot's keys up to the longest
sequence in the batch (shorter ones masked). Requests beyond the pool wait for a slot. The shapes
of a step depend only on (batch size, attended length), both rounded up to powers of two when the
step is captured, so a CUDA graph or ``torch.compile`` can replay it (off by default, see below).

Where its time goes: on the CPU with a small model, in the forty-odd torch operations per layer
(a few microseconds of dispatch each, whatever the batch: for the bundled model a lone request
decodes slower than ../batched's numpy, a full batch faster) and the per-request sampling on the
host; with a large model, in reading the weights once per step. On a GPU, without graphs, in
launching the kernels one by one; a captured graph launches a whole step at once. Each step copies
the logits to the host, where ``sampler_for(request).choose`` applies the task's rule exactly.

Settings, read from the environment when you drive the decoder yourself (the sandbox passes none
of them in, so an evaluation runs the defaults; to submit other settings, change the defaults):

- ``EDC_TORCH_DEVICE``: ``cpu`` or ``cuda`` (default: ``cuda`` when torch sees a GPU);
- ``EDC_TORCH_DTYPE``: ``float32``, ``bfloat16`` or ``float16`` for weights and cache (default:
  bfloat16 on CUDA, float32 on the CPU);
- ``EDC_TORCH_GRAPHS``: ``off`` (default), ``cudagraph`` (capture each step shape once in a CUDA
  graph and replay it; CUDA only) or ``compile`` (``torch.compile`` of the step,
  ``mode="reduce-overhead"`` on CUDA; on the CPU it needs a C++ compiler in the sandbox, and for
  the bundled model it ran slower than eager there);
- ``EDC_TORCH_SLOTS``: requests held at once (default 16);
- ``EDC_TORCH_CONTEXT``: positions per slot (default: the model's ``max_position_embeddings``,
  at most 4096); a request needing more is refused with an error.

Torch's thread pool follows ``OMP_NUM_THREADS``, which the harness sets to the cores the sandbox
owns.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from edc_participant import load_config, load_weights, sampler_for

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GRAPH_MODES = ("off", "cudagraph", "compile")


def use_sandbox_threads() -> None:
    """One intra-op thread per core the sandbox owns (the harness says how many)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    # Nothing here runs operations side by side; an error means it was set already: harmless.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def as_tensor(array):
    """A CPU tensor of one weight as ``load_weights`` returns it (float32/16/64 arrays, or
    bfloat16 given as its raw 16-bit patterns: uint16 or an ml_dtypes bfloat16 array)."""
    a = np.asarray(array)
    if a.dtype == np.uint16 or a.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(a.view(np.int16))).view(torch.bfloat16)
    # A copy: the arrays are read-only views of the mapped file, which torch will not wrap.
    return torch.from_numpy(np.array(a))


def rope_inv_freq(config, head_dim):
    """Rotary frequencies as the reference computes them (``default`` and ``llama3`` types)."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float64)
    if kind == "default":
        return inv_freq
    if kind != "llama3":
        raise ValueError(f"rope type {kind!r} is not supported")
    factor = float(rope["factor"])
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_len = float(rope.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return np.where(medium, smoothed, scaled)


def power_of_two_at_least(n, floor, cap):
    size = floor
    while size < n:
        size *= 2
    return min(size, cap)


class Llama:
    """A Hugging Face-layout Llama in torch with a fixed pool of KV-cache slots."""

    def __init__(self, model_dir, *, device, dtype, slots, context):
        c = load_config(model_dir)
        w = load_weights(model_dir)
        self.device, self.dtype = device, dtype
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.group = self.heads // self.kv_heads
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        self.slots = slots
        self.context = min(context, int(c.get("max_position_embeddings", context)))
        # Casts between the float32 residual stream and the weights' type: none in float32
        # (each skipped call saves a torch dispatch, which is what a small model's step costs).
        if dtype == torch.float32:
            self.narrow = self.widen = lambda t: t
        else:
            self.narrow, self.widen = (lambda t: t.to(dtype)), (lambda t: t.float())

        def weight(name, kind=dtype):
            return as_tensor(w[name]).to(device=device, dtype=kind)

        def projection(names):
            # Stored (in, out), so that x @ W is the product (on the CPU twice as fast for a few
            # rows as F.linear's (out, in)); several projections side by side, biases likewise.
            stacked = torch.cat([weight(n + ".weight") for n in names]).t().contiguous()
            if not any(n + ".bias" in w for n in names):
                return stacked, None
            biases = [
                weight(n + ".bias")
                if n + ".bias" in w
                else torch.zeros(w[n + ".weight"].shape[0], device=device, dtype=dtype)
                for n in names
            ]
            return stacked, torch.cat(biases)

        self.embed = weight("model.embed_tokens.weight")
        # As the reference: an lm_head of its own unless the config ties it to the embedding.
        # Kept in float32, as the norm before it: its error would land on the logits directly.
        tied = bool(c.get("tie_word_embeddings", False))
        head = "model.embed_tokens.weight" if tied else "lm_head.weight"
        self.lm_head = weight(head, torch.float32).t().contiguous()
        self.norm = weight("model.norm.weight", torch.float32)
        self.layers = []
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            qkv, qkv_bias = projection([p + f"self_attn.{x}_proj" for x in "qkv"])
            o, o_bias = projection([p + "self_attn.o_proj"])
            gate_up, gate_up_bias = projection([p + "mlp.gate_proj", p + "mlp.up_proj"])
            down, down_bias = projection([p + "mlp.down_proj"])
            self.layers.append(
                {
                    "in_norm": weight(p + "input_layernorm.weight", torch.float32),
                    "qkv": qkv,
                    "qkv_bias": qkv_bias,
                    "o": o,
                    "o_bias": o_bias,
                    "post_norm": weight(p + "post_attention_layernorm.weight", torch.float32),
                    "gate_up": gate_up,
                    "gate_up_bias": gate_up_bias,
                    "down": down,
                    "down_bias": down_bias,
                }
            )
        # Cos and sin of every position a slot holds, computed once (float32, as the reference),
        # sin with the sign of rotate-half folded in: rope(x) = x·cos + roll(x, half)·sin.
        half = self.head_dim // 2
        angles = (
            np.arange(self.context, dtype=np.float32)[:, None]
            * rope_inv_freq(c, self.head_dim).astype(np.float32)[None]
        )
        angles = np.concatenate([angles, angles], axis=-1)
        sign = np.concatenate([-np.ones(half, np.float32), np.ones(half, np.float32)])
        self.cos = torch.from_numpy(np.cos(angles)).to(device)
        self.sin = torch.from_numpy(np.sin(angles) * sign).to(device)
        # The static cache, one allocation: per layer, keys and values of shape
        # (slots, kv heads, context, head dim), also seen flat as (slots·kv heads·context, hd).
        shape = (len(self.layers), 2, slots, self.kv_heads, self.context, self.head_dim)
        self.cache = torch.zeros(shape, device=device, dtype=dtype)
        self.keys = [self.cache[i, 0] for i in range(len(self.layers))]
        self.values = [self.cache[i, 1] for i in range(len(self.layers))]
        self.flat_keys = [k.view(-1, self.head_dim) for k in self.keys]
        self.flat_values = [v.view(-1, self.head_dim) for v in self.values]

    # -- building blocks --

    def rms(self, x, weight):
        # As the reference computes it (F.rms_norm is not fused on the CPU, and no faster).
        return weight * (x / torch.sqrt(x.square().mean(-1, keepdim=True) + self.eps))

    @staticmethod
    def linear(x, weight, bias):
        return torch.mm(x, weight) if bias is None else torch.addmm(bias, x, weight)

    def add_linear(self, x, y, weight, bias):
        """``x + y @ weight (+ bias)``, with ``x`` the float32 residual stream."""
        if self.dtype == torch.float32 and bias is None:
            return torch.addmm(x, y, weight)  # the residual add done by the product itself
        return x + self.widen(self.linear(y, weight, bias))

    def attention_inputs(self, x, layer, n, cos, sin):
        """Rotated queries ``(n, heads, head dim)``, keys and values ``(n, kv heads, head dim)``."""
        h, kvh, hd = self.heads, self.kv_heads, self.head_dim
        x = self.narrow(self.rms(x, layer["in_norm"]))
        out = self.linear(x, layer["qkv"], layer["qkv_bias"]).view(n, h + 2 * kvh, hd)
        qk = self.widen(out[:, : h + kvh])
        qk = self.narrow(torch.addcmul(qk * cos, qk.roll(hd // 2, dims=-1), sin))
        return qk[:, :h], qk[:, h:], out[:, h + kvh :]

    def block_end(self, x, y, layer):
        """The attention output projected back into the residual stream, then the MLP."""
        x = self.add_linear(x, y, layer["o"], layer["o_bias"])
        h = self.narrow(self.rms(x, layer["post_norm"]))
        gate, up = self.linear(h, layer["gate_up"], layer["gate_up_bias"]).chunk(2, dim=-1)
        return self.add_linear(x, F.silu(gate) * up, layer["down"], layer["down_bias"])

    # -- the passes --

    @torch.no_grad()
    def prefill(self, slot, prompt):
        """Fill ``slot`` with ``prompt``; float32 logits ``(1, vocab)`` of its last position."""
        n = len(prompt)
        x = self.widen(self.embed[torch.tensor(prompt, device=self.device)])
        cos, sin = self.cos[:n, None], self.sin[:n, None]
        for li, layer in enumerate(self.layers):
            q, k, v = self.attention_inputs(x, layer, n, cos, sin)
            keys, values = self.keys[li][slot, :, :n], self.values[li][slot, :, :n]
            keys.copy_(k.transpose(0, 1))
            values.copy_(v.transpose(0, 1))
            y = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None], keys[None], values[None], is_causal=True, enable_gqa=True
            )
            x = self.block_end(x, y[0].transpose(0, 1).reshape(n, -1), layer)
        return torch.mm(self.rms(x[-1:], self.norm), self.lm_head)

    def decode(self, tokens, positions, length):
        """One new position for batch row (= slot) i: ``tokens[i]`` at ``positions[i]``, attending
        to the slot's first ``length`` positions (those past its own are masked). Shapes depend on
        ``(len(tokens), length)`` only; float32 logits ``(len(tokens), vocab)``."""
        b = tokens.shape[0]
        kvh, g, hd, ctx = self.kv_heads, self.group, self.head_dim, self.context
        x = self.widen(self.embed[tokens])
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        # Where row i's new key and value go in a layer's flat (slots·kv heads·context, hd) view.
        heads = torch.arange(kvh, device=self.device)
        rows = torch.arange(b, device=self.device)
        at = ((rows[:, None] * kvh + heads[None]) * ctx + positions[:, None]).reshape(-1)
        hidden = torch.arange(length, device=self.device)[None] > positions[:, None]
        mask = torch.zeros(b, 1, 1, length, device=self.device, dtype=self.dtype)
        mask.masked_fill_(hidden[:, None, None], float("-inf"))
        for li, layer in enumerate(self.layers):
            q, k, v = self.attention_inputs(x, layer, b, cos, sin)
            self.flat_keys[li].index_copy_(0, at, k.reshape(-1, hd))
            self.flat_values[li].index_copy_(0, at, v.reshape(-1, hd))
            # Query head j reads kv head j // group: a kv head's group of query heads stands
            # where a sequence of queries would, all seeing the same positions.
            y = F.scaled_dot_product_attention(
                q.reshape(b, kvh, g, hd),
                self.keys[li][:b, :, :length],
                self.values[li][:b, :, :length],
                attn_mask=mask,
            )
            x = self.block_end(x, y.reshape(b, -1), layer)
        return torch.mm(self.rms(x, self.norm), self.lm_head)


class Stepper:
    """Runs ``Llama.decode`` for slots ``0 … b−1``, eagerly or through graphs of fixed shapes."""

    def __init__(self, model, mode):
        self.model, self.mode = model, mode
        self.graphs = {}  # (batch, length) -> (graph, tokens, positions, logits)
        if mode == "compile":
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            cuda = model.device.type == "cuda"
            self.compiled = torch.compile(
                model.decode, mode="reduce-overhead" if cuda else None, dynamic=False
            )

    @torch.no_grad()
    def __call__(self, slots, tokens, positions):
        """Float32 logits on the host, one row per given slot."""
        m = self.model
        if self.mode == "off":
            batch, length = max(slots) + 1, max(positions) + 1
        else:  # few shapes, each captured or compiled once
            batch = power_of_two_at_least(max(slots) + 1, 1, m.slots)
            length = power_of_two_at_least(max(positions) + 1, 64, m.context)
        # Rows of free or finished slots decode token 0 at position 0 of their own slot: harmless.
        token_row = np.zeros(batch, dtype=np.int64)
        position_row = np.zeros(batch, dtype=np.int64)
        token_row[slots], position_row[slots] = tokens, positions
        token_in = torch.from_numpy(token_row)
        position_in = torch.from_numpy(position_row)
        if self.mode == "cudagraph":
            logits = self.replay(batch, length, token_in, position_in)
        else:
            token_in, position_in = token_in.to(m.device), position_in.to(m.device)
            run = self.compiled if self.mode == "compile" else m.decode
            logits = run(token_in, position_in, length)
        return logits[torch.tensor(slots, device=m.device)].cpu().numpy()

    def replay(self, batch, length, token_in, position_in):
        key = (batch, length)
        if key not in self.graphs:
            m = self.model
            tokens = token_in.to(m.device)
            positions = position_in.to(m.device)
            # Warm up on a side stream, as capture requires. A step is idempotent (it writes the
            # same keys and values to the same places), so warming up on the real inputs is safe.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    m.decode(tokens, positions, length)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = m.decode(tokens, positions, length)
            self.graphs[key] = (graph, tokens, positions, logits)
        graph, tokens, positions, logits = self.graphs[key]
        tokens.copy_(token_in)
        positions.copy_(position_in)
        graph.replay()
        return logits  # read before the next replay overwrites it


class Decoder:
    def __init__(self, model_dir: str) -> None:
        use_sandbox_threads()
        device = torch.device(
            os.environ.get("EDC_TORCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
        )
        default_dtype = "bfloat16" if device.type == "cuda" else "float32"
        dtype = DTYPES[os.environ.get("EDC_TORCH_DTYPE") or default_dtype]
        mode = os.environ.get("EDC_TORCH_GRAPHS") or "off"
        if mode not in GRAPH_MODES:
            raise ValueError(f"EDC_TORCH_GRAPHS={mode!r}: use one of {', '.join(GRAPH_MODES)}")
        if mode == "cudagraph" and device.type != "cuda":
            raise ValueError("EDC_TORCH_GRAPHS=cudagraph needs a CUDA device")
        self.model = Llama(
            model_dir,
            device=device,
            dtype=dtype,
            slots=int(os.environ.get("EDC_TORCH_SLOTS") or 16),
            context=int(os.environ.get("EDC_TORCH_CONTEXT") or 4096),
        )
        self.stepper = Stepper(self.model, mode)
        self.free = list(range(self.model.slots))  # slots nobody holds
        self.state = {}  # request id -> [slot, sampler, logits for the next token]

    def step(self, requests):
        """One new token for every request holding a slot, then one batched pass for them all."""
        live = {r.id for r in requests}
        for gone in self.state.keys() - live:
            self.free.append(self.state.pop(gone)[0])
        for request in requests:
            if request.id in self.state or not self.free:
                continue  # without a free slot a request waits for one
            need = len(request.prompt) + request.max_new_tokens
            if need > self.model.context:
                raise ValueError(
                    f"request {request.id} needs {need} positions; a slot holds "
                    f"{self.model.context} (EDC_TORCH_CONTEXT)"
                )
            self.free.sort()
            slot = self.free.pop(0)  # the lowest, to keep the batch short
            logits = self.model.prefill(slot, request.prompt)[0].cpu().numpy()
            self.state[request.id] = [slot, sampler_for(request), logits]
        chosen = {}
        for request in requests:
            entry = self.state.get(request.id)
            if entry is None:
                continue
            chosen[request.id] = entry[1].choose(entry[2], step=len(request.generated))
            yield request.id, [chosen[request.id]]
        # The shim has added each token to request.generated by now.
        going_on = [r for r in requests if r.id in chosen and r.remaining > 0]
        if going_on:
            logits = self.stepper(
                [self.state[r.id][0] for r in going_on],
                [chosen[r.id] for r in going_on],
                [len(r.prompt) + len(r.generated) - 1 for r in going_on],
            )
            for request, row in zip(going_on, logits, strict=True):
                self.state[request.id][2] = row
