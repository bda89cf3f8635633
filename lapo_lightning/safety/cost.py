"""What a run will cost in memory, from its settings and the model's shape: an *estimate*.

Flow: ``lapo fit``'s start-up check (``lapo_lightning/safety/memory_check.py``) and ``lapo check``
read the model's shape (``models.shape.read_shape``: its ``config.json``, or the shipped facts of
:mod:`lapo_lightning.models.known` offline) and the longest prompt, then call the pure
functions below; ``lapo_lightning/safety/cost_advice.py`` prints the estimate as a table and says
which single setting lowers it. The shape comes from ``lapo_lightning/models/shape.py``.

The estimate is per process (DDP holds one full replica per GPU; ``data.problems_per_step``
is per process) and models the worst step of the run: every completion runs to
``model.generation.max_new_tokens`` and every prompt is as long as the longest one. Phases
that never overlap in time are combined with ``max``::

    peak = weights + LoRA state + max(generation, training micro-batch)

What it leaves out: the CUDA context (~0.3-0.5 GB), allocator fragmentation, the
reference pass (a no-grad forward, smaller than the training one), the prefill's transient
activations, and the rollout tensors themselves (ids, masks, log-probs: a few MB). The
formulas follow what this code base runs (peft LoRA, bitsandbytes NF4, ``CompactDecode``,
``head_logprobs``); each docstring says how it was checked. Calibration on CPU is in
``tests/test_cost.py`` and ``docs/performance.md`` ("Memory before the run"); none of it was
measured on a GPU.

Supported architectures: dense Llama, Qwen2, Qwen3 and Mistral decoders (the parameter
count is exact for them). Any other ``model_type`` prints "no estimate" and runs unchecked.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from lapo_lightning.models.shape import ModelShape


GB = 1e9  # the table prints decimal gigabytes; comparisons are in bytes
DEFAULT_PROMPT_TOKENS = 200  # without problems to measure: the paper's plain prompt is ~150 BPE tokens
LARGE_LORA_SHARE = 0.05  # above this share of the base, a LoRA rank is likely sized for a bigger model
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BLOCK = 64  # bitsandbytes 4-bit block size: one absmax per 64 weights
NESTED_BLOCK = 256  # double quantization: the absmaxes quantized in blocks of 256
# Per quantized linear, bitsandbytes also keeps the NF4 code (16 fp32) and, with double
# quantization, the nested code (256 fp32) and an fp32 offset.
QUANT_TABLE_BYTES = {False: 16 * 4, True: 16 * 4 + 256 * 4 + 4}
LORA_STATE_BYTES = 16  # per LoRA parameter: fp32 weight 4 + fp32 grad 4 + AdamW exp_avg/exp_avg_sq 8
SAMPLER_COPIES = 8  # [rows, V] fp32 tensors alive while picking a token (see generation_bytes)
SAVED_VALUE_BYTES = 4  # activations kept for backward are counted as fp32 (see training_activation_bytes)
# Bytes per entry of one chunk's [chunk, V] logits at the head's peak (see head_bytes), by the
# head's dtype size; the second table for a trainable head (a LoRA on lm_head).
CHUNK_ENTRY_BYTES = {4: 4, 2: 8}
CHUNK_ENTRY_BYTES_TRAINABLE = {4: 24, 2: 24}


@dataclass(frozen=True)
class Linear:
    name: str  # the module path peft matches target_modules against
    fan_in: int
    fan_out: int
    bias: bool


def layer_linears(shape: ModelShape, layer: int) -> list[Linear]:
    """The seven linear layers of decoder layer ``layer`` (attention q/k/v/o, SwiGLU gate/up/down)."""
    h, q, kv, i = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.intermediate
    at, mlp = f"model.layers.{layer}.self_attn.", f"model.layers.{layer}.mlp."
    return [
        Linear(at + "q_proj", h, q, shape.qkv_bias),
        Linear(at + "k_proj", h, kv, shape.qkv_bias),
        Linear(at + "v_proj", h, kv, shape.qkv_bias),
        Linear(at + "o_proj", q, h, shape.o_bias),
        Linear(mlp + "gate_proj", h, i, shape.mlp_bias),
        Linear(mlp + "up_proj", h, i, shape.mlp_bias),
        Linear(mlp + "down_proj", i, h, shape.mlp_bias),
    ]


def decoder_linears(shape: ModelShape) -> list[Linear]:
    return [lin for layer in range(shape.layers) for lin in layer_linears(shape, layer)]


def linear_params(lin: Linear) -> int:
    return lin.fan_in * lin.fan_out + (lin.fan_out if lin.bias else 0)


def other_params(shape: ModelShape) -> int:
    """Everything outside the decoder linears: embeddings, lm_head (unless tied), RMSNorm weights.

    Norms: two of width h per layer, one final, and for Qwen3 two of width d per layer.
    """
    norms = shape.layers * (2 * shape.hidden + (2 * shape.head_dim if shape.qk_norm else 0)) + shape.hidden
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    return embeddings + norms


def parameter_count(shape: ModelShape) -> int:
    """Base model parameters, tied weights counted once (= ``sum(p.numel() for p in model.parameters())``).

    Example (``tiny:llama``: h 64, 2 layers, 4 heads of 16, 2 KV heads, i 128, V 263, untied,
    no biases): per layer q 64*64 + k 64*32 + v 64*32 + o 64*64 + 3 * 64*128 = 36,864 and
    norms 128; embeddings and head 2 * 263*64 = 33,664; final norm 64 ->
    2 * (36,864 + 128) + 33,664 + 64 = 107,712.
    """
    return sum(linear_params(lin) for lin in decoder_linears(shape)) + other_params(shape)


# ------------------------------------------------------------------ weights
def weight_bytes(shape: ModelShape, dtype: str, load_in_4bit: bool, double_quant: bool = True) -> int:
    """Bytes of the base model's weights as ``load_policy`` leaves them.

    Unquantized: every parameter in ``dtype``. In 4-bit (bitsandbytes NF4): each decoder
    linear weight is packed two to a byte (0.5 byte/param) plus its block constants: one
    absmax per 64 weights, stored as fp32 (4/64 = 0.0625 byte/param) or, with double
    quantization, as one uint8 per 64 plus one fp32 per 256 blocks (~0.0159 byte/param),
    and a few code tables per layer (:data:`QUANT_TABLE_BYTES`, ~1 KB).
    The output head and the embeddings are not quantized: every other parameter (embeddings,
    head, norms, biases) stays in ``dtype``, except fp16, which ``load_policy`` upcasts to fp32
    (:func:`activation_dtype_bytes`).
    Example (the stage-1 1.5B shape, tied, double quantization, bf16): 1,310,195,712 quantized
    weights -> 655.1 MB packed + 20.5 + 0.3 MB block constants + 0.2 MB tables; 233,518,592
    other parameters (embedding, norms, q/k/v biases) x 2 = 467.0 MB; total 1.14 GB.
    Checked against the bytes of a real 4-bit model's tensors (tests/test_cost.py).
    """
    total = parameter_count(shape)
    if not load_in_4bit:
        return total * DTYPE_BYTES[dtype]
    quantized = sum(lin.fan_in * lin.fan_out for lin in decoder_linears(shape))
    blocks = sum(math.ceil(lin.fan_in * lin.fan_out / NF4_BLOCK) for lin in decoder_linears(shape))
    if double_quant:  # one uint8 absmax per block, one fp32 per 256 blocks (per tensor)
        constants = blocks + sum(4 * math.ceil(math.ceil(lin.fan_in * lin.fan_out / NF4_BLOCK) / NESTED_BLOCK)
                                 for lin in decoder_linears(shape))
    else:
        constants = 4 * blocks
    tables = QUANT_TABLE_BYTES[double_quant] * len(decoder_linears(shape))
    other = activation_dtype_bytes(dtype, load_in_4bit) * (total - quantized)
    return quantized // 2 + constants + tables + other


# ------------------------------------------------------------------ LoRA
def adapter_settings(policy) -> tuple[int, list[str] | str]:
    """(rank, target_modules) of the adapter ``load_policy`` will train: a saved adapter's
    own config when ``model.policy.adapter`` names one, else ``model.policy.lora``."""
    if policy.adapter is not None:
        path = Path(policy.adapter) / "adapter_config.json"
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            return int(saved.get("r", policy.lora.r)), saved.get("target_modules") or policy.lora.target_modules
    return policy.lora.r, policy.lora.target_modules


def is_target(name: str, targets: list[str] | str) -> bool:
    """peft's matching: "all-linear" = every linear but the output head; a string is a regex
    that must match the whole module name; a list matches a name equal to an entry or ending
    in "." + entry (``q_proj`` matches ``model.layers.0.self_attn.q_proj``)."""
    if targets == "all-linear":
        return name != "lm_head"
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_parameter_count(shape: ModelShape, r: int, targets: list[str] | str) -> int:
    """Trainable LoRA parameters: A (fan_in x r) and B (r x fan_out) for each adapted linear,
    A (r x V) and B (h x r) for an adapted embedding.

    Example (``tiny:llama`` with r 8 on all linear layers): per layer
    8 * [(64+64) + (64+32) + (64+32) + (64+64) + 2 * (64+128) + (128+64)] = 8 * 1,024 = 8,192,
    two layers -> 16,384. Checked exactly against peft (tests/test_cost.py).
    """
    linears = decoder_linears(shape) + [Linear("lm_head", shape.hidden, shape.vocab, False)]
    count = sum(r * (lin.fan_in + lin.fan_out) for lin in linears if is_target(lin.name, targets))
    if targets != "all-linear" and is_target("model.embed_tokens", targets):
        count += r * (shape.vocab + shape.hidden)
    return count


def adapted_per_layer(shape: ModelShape, targets: list[str] | str) -> int:
    """How many of a decoder layer's seven linears carry LoRA (each saves an r-wide activation)."""
    return sum(is_target(lin.name, targets) for lin in layer_linears(shape, 0))


# ------------------------------------------------------------------ activations
def activation_dtype_bytes(dtype: str, load_in_4bit: bool) -> int:
    """Bytes per value of the residual stream, keys, values and logits: ``dtype``'s, except fp16
    in 4-bit, where peft's ``prepare_model_for_kbit_training`` upcasts the embeddings, norms and
    head to fp32 (``load_policy`` keeps bf16 and fp32 as they are; the NF4 layers return their
    input's dtype). Checked on a loaded model (tests/test_cost.py)."""
    return 4 if load_in_4bit and dtype == "float16" else DTYPE_BYTES[dtype]


def kv_cache_bytes(shape: ModelShape, rows: int, tokens: int, value_bytes: int) -> int:
    """Keys and values of every layer: ``2 * L * n_kv * d * bytes * rows * tokens``.

    Example: the stage-1 1.5B shape (L 28, n_kv 2, d 128), fp32, 64 rows x 4,296 tokens ->
    2 * 28 * 2 * 128 * 4 * 64 * 4,296 = 15.8e9 bytes. (``DynamicCache`` grows a layer by
    concatenation, so one layer briefly exists twice: +1/L, ignored.)
    """
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * value_bytes * rows * tokens


def generation_bytes(shape: ModelShape, rows: int, tokens: int, value_bytes: int) -> tuple[int, int]:
    """(KV cache, sampler) bytes of one ``generate`` call over ``rows`` sequences of ``tokens``.

    The sampler term is :data:`SAMPLER_COPIES` fp32 [rows, V] tensors: the logits, their
    temperature-scaled and filtered copies, top-p's sorted values, order and cumulative sum,
    the softmax and the log-softmax (``fast_rollout.pick_tokens``); an upper bound.
    """
    return kv_cache_bytes(shape, rows, tokens, value_bytes), SAMPLER_COPIES * 4 * rows * shape.vocab


def values_saved_per_token(shape: ModelShape, lora_r: int, adapted: int) -> int:
    """Activation values one decoder layer keeps for backward per token, besides the mask.

    With LoRA on a frozen base, a linear keeps nothing for its own weight but its LoRA
    branch keeps its input, so every input to an adapted linear is kept:
    - the two RMSNorms keep their input and output: 2 * 2h;
    - attention keeps q, the keys and values repeated to n_h heads (``repeat_kv``: with a
      padding mask SDPA gets no GQA path) and its output (o_proj's input is a view of it):
      4 * n_h*d, plus the log-sum-exp: n_h (a fused kernel: no [s, s] probabilities);
    - SwiGLU keeps gate, up, SiLU(gate) and down_proj's input: 4i;
    - LoRA: each adapted linear's A output, r wide.
    Example (``tiny:llama``: h 64, n_h*d 64, i 128; r 8 on all seven): 256 + 256 + 4 + 512 + 56 = 1,084.
    """
    return 4 * shape.hidden + 4 * shape.heads * shape.head_dim + shape.heads + 4 * shape.intermediate + lora_r * adapted


def prompts_per_micro_batch(micro: int, group_size: int) -> int:
    """Distinct prompts in a micro-batch: ``GRPOModule.micro_batches`` keeps each group's G rows
    together, so ``micro`` rows span ceil(micro / G) groups when one size divides the other,
    and at most one more otherwise. Examples: (4, 8) -> 1; (8, 4) -> 2; (6, 4) -> 3."""
    aligned = group_size % micro == 0 or micro % group_size == 0
    return min(micro, -(-micro // group_size) + (0 if aligned else 1))


def training_activation_bytes(shape: ModelShape, rows: int, prompt: int, completion: int, prompts: int,
                              residual_bytes: int, lora_r: int, adapted: int, checkpointing: bool) -> int:
    """Activations one micro-batch keeps for backward: ``rows`` completions of ``completion``
    tokens continuing ``prompts`` distinct prompts of ``prompt`` tokens.

    ``prompts == rows`` is the padded forward (every row runs its own prompt); fewer is the
    shared-prefix forward (``model.grpo.shared_prefix``), which runs each distinct prompt once
    and gives each row a copy of its prompt's keys and values. Per layer:
    - :func:`values_saved_per_token` for every token run (prompts * prompt + rows * completion);
    - the attention mask: SDPA turns the boolean padding mask into a float bias per call and
      keeps it, one value per (query, key): rows * (prompt + completion)^2 padded, or
      prompts * prompt^2 + rows * completion * (prompt + completion) shared;
    - shared only: each row's prompt keys and values, copied, concatenated and repeated to
      n_h heads: rows * prompt * 2 * (n_h + 2 n_kv) * d.
    Outside the layers, 3h per token run (embedding output, final norm). Values are counted
    as fp32 (:data:`SAVED_VALUE_BYTES`): in 4-bit the stream is fp32, and with a bf16 base
    RMSNorm and peft's fp32 adapters keep fp32 copies (measured on CPU: bf16 keeps 0.9x the
    bytes of fp32, not 0.5x).

    Without checkpointing all L layers keep theirs. With (non-reentrant) checkpointing each
    layer keeps only its input (h per token run, and the rows' prompt key/value copies, in
    ``residual_bytes``) and backward recomputes one layer at a time.
    Accuracy: padded, without checkpointing, 3.5-7% above the bytes autograd saved for tiny
    Llama and Qwen2 models in fp32 (tests/test_cost.py); the other forms are the same terms
    and were checked only through whole-run CPU memory (docs/performance.md).
    """
    shared = prompts < rows
    tokens = prompts * prompt + rows * completion
    if shared:
        mask = prompts * prompt**2 + rows * completion * (prompt + completion)
        prefix = rows * prompt * 2 * (shape.heads + 2 * shape.kv_heads) * shape.head_dim
    else:
        mask, prefix = rows * (prompt + completion) ** 2, 0
    layer = (values_saved_per_token(shape, lora_r, adapted) * tokens + mask + prefix) * SAVED_VALUE_BYTES
    outside = 3 * shape.hidden * tokens * SAVED_VALUE_BYTES
    if checkpointing:
        kept = shape.hidden * tokens + (rows * prompt * 2 * shape.kv_heads * shape.head_dim if shared else 0)
        return shape.layers * kept * residual_bytes + layer + outside
    return shape.layers * layer + outside


def head_bytes(rows: int, completion_tokens: int, shape: ModelShape, value_bytes: int, chunk_tokens: int,
               head_trainable: bool = False) -> int:
    """Peak bytes of the output head in a training micro-batch (``algo/head_logprobs.py``): one
    chunk's logits and temporaries, plus two ``[rows * t, h]`` tensors (the saved gradient with
    respect to the hidden states, and its product with the incoming gradient in backward).

    Per entry of the ``[chunk, V]`` chunk, frozen head: the log-softmax and its gradient are
    computed in place in one fp32 copy of the logits (4 bytes); bf16 adds the bf16 logits and
    the bf16 copy of the softmax gradient (8). A trainable head recomputes the chunk under
    autograd in backward: the logits, ``logsumexp``'s two temporaries and the gradients in fp32
    and the head's dtype (24 either way). The full-vocabulary logits never exist, so ``rows``
    and the cap enter only through the hidden-size terms.
    Example (stage 1: 4 rows x 4,096 tokens, h 1,536, V 151,936, bf16, chunk 512):
    8 * 512 * 151,936 + 2 * 4 * 4,096 * 1,536 * 2 = 0.62e9 + 0.10e9 = 0.72e9 bytes.
    """
    per_entry = (CHUNK_ENTRY_BYTES_TRAINABLE if head_trainable else CHUNK_ENTRY_BYTES)[value_bytes]
    chunk = min(chunk_tokens, rows * completion_tokens)
    return per_entry * chunk * shape.vocab + 2 * rows * completion_tokens * shape.hidden * value_bytes


# ------------------------------------------------------------------ the estimate
@dataclass
class CostEstimate:
    """One run's estimated memory (bytes) and the numbers behind it; ``cost_advice.estimate_table`` prints it."""

    model: str
    params: int
    weights_label: str  # "4-bit NF4" or the dtype
    weight_bytes: int
    lora_params: int
    lora_label: str
    lora_state_bytes: int
    problems_per_step: int
    group_size: int
    rows_per_call: int
    prompt_tokens: int
    max_new_tokens: int
    kv_cache_bytes: int
    sampler_bytes: int
    micro_batch_size: int
    checkpointing: bool
    activation_bytes: int
    logits_bytes: int

    @property
    def lora_share(self) -> float:
        return self.lora_params / self.params

    @property
    def rollouts(self) -> int:
        return self.problems_per_step * self.group_size

    @property
    def longest_sequence(self) -> int:
        return self.prompt_tokens + self.max_new_tokens

    @property
    def generation_bytes(self) -> int:
        return self.kv_cache_bytes + self.sampler_bytes

    @property
    def training_bytes(self) -> int:
        return self.activation_bytes + self.logits_bytes

    @property
    def peak_bytes(self) -> int:
        return self.weight_bytes + self.lora_state_bytes + max(self.generation_bytes, self.training_bytes)


def estimate(shape: ModelShape, policy, grpo, generation, problems_per_step: int,
             prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> CostEstimate:
    """The run's memory from its settings: ``policy`` a PolicyConfig, ``grpo`` a GRPOConfig,
    ``generation`` a GenerationConfig (only attributes are read)."""
    r, targets = adapter_settings(policy)
    lora = lora_parameter_count(shape, r, targets)
    value_bytes = activation_dtype_bytes(policy.dtype, policy.load_in_4bit)
    rollouts = problems_per_step * grpo.group_size
    rows = min(rollouts, generation.max_rollouts_per_call or rollouts)
    cap, micro = generation.max_new_tokens, grpo.micro_batch_size
    prompts = prompts_per_micro_batch(micro, grpo.group_size) if grpo.shared_prefix else micro
    kv, sampler = generation_bytes(shape, rows, prompt_tokens + cap, value_bytes)
    target_label = targets if isinstance(targets, str) else ",".join(targets)
    return CostEstimate(
        model=policy.model,
        params=parameter_count(shape),
        weights_label="4-bit NF4" if policy.load_in_4bit else policy.dtype,
        weight_bytes=weight_bytes(shape, policy.dtype, policy.load_in_4bit, policy.bnb_double_quant),
        lora_params=lora,
        lora_label=f"r {r}, {target_label}",
        lora_state_bytes=LORA_STATE_BYTES * lora,
        problems_per_step=problems_per_step,
        group_size=grpo.group_size,
        rows_per_call=rows,
        prompt_tokens=prompt_tokens,
        max_new_tokens=cap,
        kv_cache_bytes=kv,
        sampler_bytes=sampler,
        micro_batch_size=micro,
        checkpointing=policy.gradient_checkpointing,
        activation_bytes=training_activation_bytes(shape, micro, prompt_tokens, cap, prompts, value_bytes, r,
                                                   adapted_per_layer(shape, targets), policy.gradient_checkpointing),
        logits_bytes=head_bytes(micro, cap, shape, value_bytes, grpo.logprob_chunk_tokens,
                                is_target("lm_head", targets)),
    )
