"""Side-by-side GRPO step cost: lapo-lightning vs TRL's GRPOTrainer vs the bare floor.

Each (system, workload) runs in its own subprocess, alternating systems within one
invocation, so peak resident memory is per system and nothing is shared or warm across
runs. Same model, prompts, G, problems per step, max new tokens, one optimizer update per
step, LoRA in both, KL on with the adapter-disabled reference in both.

Workloads (a random-init Llama, so lengths are controlled by construction):
  equal      EOS can never be sampled: every completion runs to max_new_tokens. The prompt is
             the paper's plain template through the character tokenizer (~460 tokens).
  varied     the same prompts; EOS is likely enough that lengths in a batch spread over >10x
             (geometric-ish).
  realistic  the shape of a real LAPO stage-2 run: the paper's prompt with the budget
             sentence, on real MATH-500 problems, through a real BPE tokenizer (SmolLM2's,
             so the model's vocabulary is its 49,152 rows): 165-167 tokens (the rows whose
             prompt has the median's most common length). Completion lengths are uniform on
             1..--realistic-cap (an EOS rate that rises with the position,
             :func:`install_uniform_stop`), as completions spread up to the cap in real runs.
             At the CPU size (hidden 256, 6 layers) the output head is 3.6x the decoder's
             weights (Qwen2.5-1.5B: 0.2x), so the per-completion-token work weighs more here.
The "floor" row is raw batched ``generate`` plus one forward/backward of the same LoRA
model over the generated batch (same micro-batches; logits only at completion positions),
with nothing else. "lapo_padded" is
ours with ``shared_prefix`` off (each prompt recomputed per completion): an ablation;
"lapo_grouped" is ours with each group's rows always in the same micro-batches (the
micro-batch order before ``plan_micro_batches`` could sort rows by length across groups).

On a GPU, ``--preset qwen2.5-1.5b`` swaps the tiny Llama for a random-init Qwen2 of
Qwen2.5-1.5B's shape (its vocabulary size too, with the project's character tokenizer
in its first rows) whose EOS probability per token is calibrated for each workload;
``--load-in-4bit`` loads it as QLoRA does (NF4, compute in ``--dtype``) through the
project's own ``PolicyConfig`` and, for TRL, the same ``BitsAndBytesConfig``.
benchmarks/gpu_check.sh runs that on the device machine.

    pip install -e ".[bench]"
    python benchmarks/trl_compare.py                  # the table in docs/performance.md
    python benchmarks/trl_compare.py --workloads realistic --realistic-cap 512
    python benchmarks/trl_compare.py --scaling        # our step time as G, B, T double
    python benchmarks/trl_compare.py --smoke          # seconds; used by the test suite
    python benchmarks/trl_compare.py --device cuda --preset qwen2.5-1.5b --load-in-4bit --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the work tree's lapo_lightning, installed or not
from lapo_lightning.prompts import PlainPrompt  # noqa: E402  (stdlib only: cheap)
SYSTEMS = ("floor", "lapo", "lapo_padded", "lapo_grouped", "trl")  # the lapo_* rows are ablations of lapo
EOS_WEIGHT = {"equal": -5.0, "varied": 0.5}  # EOS logit weight on a constant feature (see build_models)
WORKLOADS = ("equal", "varied", "realistic")
BPE_TOKENIZER = "gguf:smollm2-135m-instruct"  # the realistic workload's tokenizer (model_source name or folder)
SPEC_FILE = "workload.json"  # beside each built model: its problems, budget and stop schedule
# --preset shapes (random-init Qwen2, tied embeddings as in Qwen2.5-1.5B). The vocabulary is
# the real model's size; the character tokenizer fills its first rows and sampled ids past
# them decode to nothing, as a padded vocabulary's unused rows do.
PRESETS = {
    "qwen2.5-1.5b": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                     "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936},
    "qwen2-tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,  # the same path, test-sized
                   "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1024},
}


# ----------------------------------------------------------------------------- models
def build_models(root: Path, hidden: int, layers: int, workloads: list[str] | None = None,
                 realistic_cap: int = 512, bpe_tokenizer: str = BPE_TOKENIZER) -> dict[str, str]:
    """One model folder per workload: the same random Llama with a set EOS behaviour
    (``lapo_lightning.models.tiny.set_stop_rate``: a near-constant EOS logit; pad never sampled).
    The realistic workload's model carries the BPE tokenizer and its vocabulary size."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lapo_lightning.models.tiny import save_tiny

    folders = {}
    for workload in workloads or list(EOS_WEIGHT):
        if workload == "realistic":
            folders[workload] = build_realistic_model(root / workload, hidden, layers, realistic_cap, bpe_tokenizer)
            continue
        folder = save_tiny(root / workload, "llama", hidden, layers, eos_weight=EOS_WEIGHT[workload])
        model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
        if silence_extra_stops(model, tokenizer):
            model.save_pretrained(folder)
        folders[workload] = str(folder)
    return folders


def silence_extra_stops(model, tokenizer) -> list[int]:
    """Make the stop ids other than EOS that lapo's samplers also end on (the chat template's
    end of turn, ``lapo_lightning.stop_tokens``) as unlikely as pad, and return them: raw
    ``generate`` (floor, TRL) stops at EOS only, so otherwise the workloads would differ."""
    import torch

    from lapo_lightning.stop_tokens import stop_token_ids

    extra = [i for i in stop_token_ids(tokenizer) if i != tokenizer.eos_token_id]
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for token in extra:
            head[token] = 0.0
            head[token, 0] = -5.0  # as set_stop_rate does for pad: reads only the near-constant feature
    return extra


# ------------------------------------------------------------------ realistic workload
class StatedBudget(PlainPrompt):
    """The paper's stage-2 prompt ("... Assistant: <think> I will answer the question with n
    tokens.") with one budget n for every problem, whatever the batch carries."""

    def __init__(self, budget: int) -> None:
        super().__init__(placement="think")
        self.budget = budget

    def render(self, problem: str, budget: int | None = None, tokenizer=None) -> str:
        return super().render(problem, self.budget, tokenizer)


def realistic_rows(tokenizer, budget: int) -> tuple[list[dict], int]:
    """MATH-500 rows whose stage-2 prompt (:class:`StatedBudget`) is P tokens long, and P.

    P is the most common token count among the middle fifth of the 500 prompts (so, about
    the median). Equal lengths keep the stop schedule exact and rule out left padding.
    """
    rows = [json.loads(line) for line in (ROOT / "data/math500.jsonl").read_text().split("\n") if line.strip()]
    prompt = StatedBudget(budget)
    counts = [len(tokenizer(prompt.render(r["problem"]), add_special_tokens=False).input_ids) for r in rows]
    ranked = sorted(counts)
    middle = ranked[2 * len(ranked) // 5: 3 * len(ranked) // 5]
    length = max(sorted(set(middle)), key=middle.count)
    return [{"id": r["id"], "problem": r["problem"], "answer": r["answer"]}
            for r, n in zip(rows, counts) if n == length], length


def bpe_tokenizer_folder(name: str) -> str:
    from lapo_lightning.models.source import resolve

    return resolve(name)


def build_realistic_model(out: Path, hidden: int, layers: int, cap: int, bpe_tokenizer: str,
                          model=None, dtype: str = "float32") -> str:
    """A random model with the BPE tokenizer, EOS never sampled by itself (the stop schedule
    sets it), and ``workload.json``: the rows, the budget, the prompt length and the schedule.

    ``model`` (a preset's) replaces the random Llama of ``hidden`` x ``layers``; its
    vocabulary must hold the tokenizer's ids.
    """
    from transformers import AutoTokenizer

    from lapo_lightning.models.tiny import build_tiny_model, set_stop_rate

    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_folder(bpe_tokenizer))
    rows, prompt_len = realistic_rows(tokenizer, cap)
    if model is None:
        model = build_tiny_model("llama", hidden, layers, vocab_size=len(tokenizer))
    if model.config.vocab_size < len(tokenizer):
        raise ValueError(f"realistic workload: the model's {model.config.vocab_size} rows cannot hold "
                         f"{bpe_tokenizer}'s {len(tokenizer)} tokens")
    set_stop_rate(model, tokenizer, -5.0)  # EOS (and pad) never sampled: the schedule decides
    silence_extra_stops(model, tokenizer)
    for key in ("eos_token_id", "pad_token_id"):
        setattr(model.config, key, getattr(tokenizer, key))
        setattr(model.generation_config, key, getattr(tokenizer, key))
    model.generation_config.bos_token_id = model.config.bos_token_id = None
    text = StatedBudget(cap).render(rows[0]["problem"])
    lse = other_logsumexp(model, tokenizer, text)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    spec = {"rows": rows, "budget": cap, "prompt_tokens": prompt_len, "tokenizer": bpe_tokenizer,
            "stop": {"eos_id": tokenizer.eos_token_id, "prompt_len": prompt_len, "cap": cap, "logsumexp": lse}}
    (out / SPEC_FILE).write_text(json.dumps(spec))
    print(f"built realistic workload ({dtype}): {len(rows)} MATH-500 rows with {prompt_len}-token stage-2 prompts "
          f"({bpe_tokenizer}), completions uniform on 1..{cap}", flush=True)
    return str(out)


def other_logsumexp(model, tokenizer, prompt: str) -> float:
    """Median over a random continuation of ``prompt`` of logsumexp of the non-EOS logits:
    the stop schedule adds it to the EOS logit so that P(EOS) is the hazard it asks for."""
    import torch

    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    ids = torch.cat([ids, torch.randint(0, len(tokenizer), (1, 64))], 1).to(model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -64:].float()
    logits[:, tokenizer.eos_token_id] = -math.inf
    return float(logits.logsumexp(-1).median())


def install_uniform_stop(model, stop: dict) -> None:
    """Make completion lengths uniform on 1..cap, whatever samples: at the position that
    predicts completion token k (0-based, prompt of ``prompt_len`` tokens) the EOS logit is
    set so that P(EOS) = 1 / (cap - k), the hazard of a uniform length.

    Positions are the forward's ``position_ids``, else the attention mask's ``cumsum - 1``
    (what generate() and lapo assign: left padding not counted), so the same hooks serve lapo's decoding and training forwards,
    ``generate`` (the floor, TRL) and TRL's training forward. Same model, same schedule, in
    every system.
    """
    import torch
    from transformers import PreTrainedModel

    # The transformers model itself (under a PEFT wrapper, whose generate() bypasses its forward).
    causal = next(m for m in model.modules() if isinstance(m, PreTrainedModel) and m.get_output_embeddings() is not None)
    head, state = causal.get_output_embeddings(), {}
    eos, first, cap, lse = stop["eos_id"], stop["prompt_len"] - 1, stop["cap"], stop["logsumexp"]

    def read_positions(module, args, kwargs):
        positions, mask, ids = kwargs.get("position_ids"), kwargs.get("attention_mask"), kwargs.get("input_ids")
        if positions is None and mask is not None and mask.dim() == 2 and ids is not None:
            positions = (mask.long().cumsum(-1) - 1)[:, -ids.shape[1]:]
        if positions is None:
            raise RuntimeError("install_uniform_stop: the forward got neither position_ids nor a 2-D attention_mask "
                               f"with input_ids (got {sorted(kwargs)})")
        state["positions"] = positions

    def set_eos(module, args, logits):
        k = (state["positions"][:, -logits.shape[1]:] - first).to(logits.device)  # [n, t]
        hazard = (1.0 / (cap - k.clamp(min=0)).clamp(min=1)).clamp(max=1 - 1e-6).to(torch.float32)
        value = lse + torch.log(hazard) - torch.log1p(-hazard)
        column = logits[..., eos]
        logits[..., eos] = torch.where(k >= 0, value.to(logits.dtype), column)
        return logits

    causal.register_forward_pre_hook(read_positions, with_kwargs=True)
    head.register_forward_hook(set_eos)


def workload_spec(cfg: dict) -> dict:
    """The model folder's ``workload.json`` (realistic), else the character-tokenizer default."""
    path = Path(cfg["model"]) / SPEC_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def build_preset_models(root: Path, preset: str, max_new_tokens: int, device: str, dtype: str,
                        workloads: list[str] | None = None, realistic_cap: int = 1024,
                        bpe_tokenizer: str = BPE_TOKENIZER) -> dict[str, str]:
    """One folder per workload: the same random Qwen2 of ``PRESETS[preset]``'s shape, saved in
    ``dtype``, whose EOS probability per sampled token is set by :func:`calibrate_eos`: about
    0 (equal) or 4 / max_new_tokens (varied: mean length ~T/4, >10x spread within a group).
    Realistic: the BPE tokenizer in the first rows and :func:`install_uniform_stop`'s schedule."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lapo_lightning.models.tiny import build_char_tokenizer, set_stop_rate

    tokenizer = build_char_tokenizer()
    config = Qwen2Config(**PRESETS[preset], tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    folders = {}
    workloads = workloads or list(EOS_WEIGHT)
    if "realistic" in workloads:
        from transformers import AutoTokenizer

        bpe = AutoTokenizer.from_pretrained(bpe_tokenizer_folder(bpe_tokenizer))
        torch.manual_seed(0)
        with torch.device(device):
            shape = PRESETS[preset] | {"vocab_size": max(PRESETS[preset]["vocab_size"], len(bpe))}  # room for its ids
            model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True, bos_token_id=None,
                                                 eos_token_id=bpe.eos_token_id, pad_token_id=bpe.pad_token_id))
        model = model.to(getattr(torch, dtype))
        folders["realistic"] = build_realistic_model(root / "realistic", 0, 0, realistic_cap, bpe_tokenizer,
                                                     model=model, dtype=dtype)
        del model
    stop_rates = {"equal": 1e-12, "varied": min(4 / max_new_tokens, 0.5)}
    for workload, stop_p in ((w, stop_rates[w]) for w in workloads if w in stop_rates):
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
        set_stop_rate(model, tokenizer, 1.0)  # EOS logit = the near-constant feature itself
        silence_extra_stops(model, tokenizer)
        weight = calibrate_eos(model, tokenizer, stop_p)
        with torch.no_grad():
            model.get_output_embeddings().weight[tokenizer.eos_token_id, 0] = weight
        for key in ("eos_token_id", "pad_token_id"):  # what generate() stops and pads with
            setattr(model.generation_config, key, getattr(config, key))
        folders[workload] = str(root / workload)
        model.save_pretrained(folders[workload])
        tokenizer.save_pretrained(folders[workload])
        print(f"built {preset} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters) for {workload}: "
              f"EOS weight {weight:.3f} for P(EOS) ~ {stop_p:.2g} per token", flush=True)
        del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folders


def calibrate_eos(model, tokenizer, stop_p: float) -> float:
    """The EOS head weight that makes P(EOS) ~ ``stop_p`` per token, taken as the median over a
    random continuation of a benchmark prompt. Needs ``set_stop_rate(model, tokenizer, 1.0)``
    first, so that the EOS logit equals the near-constant feature it is a multiple of."""
    import torch

    prompt = tokenizer(render(problems(1)[0]["problem"]), add_special_tokens=False, return_tensors="pt").input_ids
    ids = torch.cat([prompt, torch.randint(0, model.config.vocab_size, (1, 64))], 1).to(model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, prompt.shape[1]:].float()  # [64, V]
    feature = logits[:, tokenizer.eos_token_id].clone()
    logits[:, [tokenizer.eos_token_id, tokenizer.pad_token_id]] = -math.inf
    target = logits.logsumexp(-1) + math.log(stop_p / (1 - stop_p))  # EOS logit giving P(EOS) = stop_p
    if not bool((feature > 0).all()):
        raise RuntimeError("EOS calibration: the stop feature is not positive at every position")
    return float((target / feature).median())


def problems(n: int, spec: dict | None = None) -> list[dict]:
    rows = (spec or {}).get("rows") or [
        json.loads(line) for line in (ROOT / "data/debug_arithmetic.jsonl").read_text().splitlines()]
    return [rows[i % len(rows)] | {"id": f"{rows[i % len(rows)]['id']}-{i}"} for i in range(n)]


def prompt_template(spec: dict | None = None):
    """The stage-1 plain template, or (realistic) the stage-2 one with the stated budget."""
    from lapo_lightning.prompts import PlainPrompt

    budget = (spec or {}).get("budget")
    return PlainPrompt() if budget is None else StatedBudget(budget)


def render(problem: str, spec: dict | None = None) -> str:
    return prompt_template(spec).render(problem)


def correct(text: str, answer: str) -> float:
    from lapo_lightning.verify import ContainsAnswer

    return float(ContainsAnswer()([text], [answer]).correct[0])


# ----------------------------------------------------------------------------- workers
def run_lapo(cfg: dict) -> dict:
    import lightning.pytorch as pl

    from lapo_lightning import (Accuracy, ContainsAnswer, GenerationConfig, GRPOConfig, GRPOModule, LapoDataModule,
                                OptimConfig)

    spec = workload_spec(cfg)
    data = Path(cfg["tmp"]) / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in problems(cfg["B"] * cfg["total_steps"], spec)))
    module = GRPOModule(
        policy=policy_config(cfg),
        rewards=[Accuracy()],
        grpo=GRPOConfig(group_size=cfg["G"], kl_coef=cfg["kl"], micro_batch_size=cfg["micro"],
                        shared_prefix=cfg.get("shared_prefix", True)),
        generation=GenerationConfig(max_new_tokens=cfg["T"], temperature=1.0),
        optim=OptimConfig(lr=1e-5),
        verifier=ContainsAnswer(),
        prompt=prompt_template(spec),
    )
    timings: list[dict] = []
    sample = module.sample

    def timed_sample(*args, **kwargs):
        start = time.perf_counter()
        rollouts = sample(*args, **kwargs)
        sync()
        timings.append({"gen_s": time.perf_counter() - start, "gen_tokens": int(rollouts.lengths.sum()),
                        "train_tokens": int(rollouts.prompt_mask.sum() + rollouts.completion_mask.sum())})
        return rollouts

    module.sample = timed_sample

    class StepTimer(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            if "stop" in spec:
                install_uniform_stop(pl_module.policy, spec["stop"])

        def on_train_batch_start(self, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            sync()
            timings[-1]["step_s"] = time.perf_counter() - self.start

    trainer = pl.Trainer(accelerator={"cpu": "cpu", "cuda": "gpu"}[cfg["device"]], devices=1,
                         max_steps=cfg["total_steps"], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[StepTimer()])
    trainer.fit(module, LapoDataModule(str(data), problems_per_step=cfg["B"], seed=0))
    return {"steps": timings}


def run_lapo_padded(cfg: dict) -> dict:
    """Ours without the shared-prefix forward: each prompt recomputed for each completion."""
    return run_lapo(cfg | {"shared_prefix": False})


def run_lapo_grouped(cfg: dict) -> dict:
    """Ours with every group's rows kept in the same micro-batches (the planner's "grouped"
    order always, as before it could sort rows by length across groups)."""
    import lapo_lightning.module
    from lapo_lightning.shared_prefix import grouped_order

    def grouped_only(lengths, prompt_lengths, group_index, size, completion_weight=1.0):
        order = grouped_order(lengths, group_index)
        return [order[i: i + size] for i in range(0, len(order), size)]

    planned = lapo_lightning.module.plan_micro_batches
    lapo_lightning.module.plan_micro_batches = grouped_only
    try:
        return run_lapo(cfg)
    finally:  # a worker runs in its own process, but a test may call this in its own
        lapo_lightning.module.plan_micro_batches = planned


def run_trl(cfg: dict) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    spec = workload_spec(cfg)
    rows = problems(cfg["B"] * cfg["total_steps"], spec)
    dataset = Dataset.from_list([{"prompt": render(r["problem"], spec), "answer": r["answer"]} for r in rows])

    def accuracy(completions, answer, **kwargs):
        return [correct(c, a) for c, a in zip(completions, answer)]

    n = cfg["B"] * cfg["G"]
    args = TRLConfig(
        output_dir=str(Path(cfg["tmp"]) / "trl"), per_device_train_batch_size=cfg["micro"],
        gradient_accumulation_steps=n // cfg["micro"], num_generations=cfg["G"], max_completion_length=cfg["T"],
        learning_rate=1e-5, beta=cfg["kl"], num_iterations=1, max_steps=cfg["total_steps"], temperature=1.0,
        top_p=1.0, loss_type="dapo", logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=cfg["device"] == "cpu", bf16=False, seed=0, disable_dropout=True, shuffle_dataset=False,
        gradient_checkpointing=cfg["checkpointing"],  # TRL's GRPO default is True: set it like ours
        model_init_kwargs=trl_model_kwargs(cfg),
    )
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"], padding_side="left")
    timings: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()
            timings.append({"gen_s": 0.0, "gen_tokens": 0, "train_tokens": 0})

        def on_step_end(self, *a, **k):
            sync()
            timings[-1]["step_s"] = time.perf_counter() - self.start

    trainer = GRPOTrainer(model=cfg["model"], reward_funcs=accuracy, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[StepTimer()],
                          peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    if cfg["load_in_4bit"]:
        from lapo_lightning.policy import disable_cpu_inference_repack

        disable_cpu_inference_repack(trainer.model)  # as load_policy does: no-op on CUDA, a fix on some CPUs
    if "stop" in spec:
        install_uniform_stop(trainer.model, spec["stop"])
    generate = trainer.model.generate

    def timed_generate(*a, **k):
        start = time.perf_counter()
        out = generate(*a, **k)
        sync()
        prompt_len = k["input_ids"].shape[1] if "input_ids" in k else a[0].shape[1]
        completion = out[:, prompt_len:]
        ends = (completion == tokenizer.eos_token_id).int()
        lengths = (1 - (ends.cumsum(1) - ends).clamp(max=1)).sum(1)  # up to and incl. the first EOS
        prompt_tokens = int(k["attention_mask"].sum())
        timings[-1]["gen_s"] += time.perf_counter() - start
        timings[-1]["gen_tokens"] += int(lengths.sum())
        timings[-1]["train_tokens"] += int(lengths.sum()) + prompt_tokens
        return out

    trainer.model.generate = timed_generate
    trainer.train()
    return {"steps": timings}


def run_floor(cfg: dict) -> dict:
    import torch

    from lapo_lightning.policy import load_policy

    device = torch_device(cfg)
    model, tokenizer = load_policy(policy_config(cfg), device=device)
    if not cfg["load_in_4bit"]:  # a 4-bit model is quantized straight onto the device
        model.to(device)
    spec = workload_spec(cfg)
    if "stop" in spec:
        install_uniform_stop(model, spec["stop"])
    rows = problems(cfg["B"] * cfg["total_steps"], spec)
    timings = []
    for step in range(cfg["total_steps"]):
        batch = rows[step * cfg["B"]:(step + 1) * cfg["B"]]
        enc = tokenizer([render(r["problem"], spec) for r in batch], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        ids, mask = (enc[k].repeat_interleave(cfg["G"], 0).to(device) for k in ("input_ids", "attention_mask"))
        start = time.perf_counter()
        model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg["T"], do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        sync()
        gen_s = time.perf_counter() - start
        model.train()
        completion = out[:, ids.shape[1]:]
        ends = (completion == tokenizer.eos_token_id).int()
        completion_mask = (ends.cumsum(1) - ends) == 0
        full_mask = torch.cat([mask.bool(), completion_mask], 1)
        width = completion.shape[1]
        for i in range(0, len(out), cfg["micro"]):  # one forward/backward, same micro-batches
            part = slice(i, i + cfg["micro"])
            # Only the logits that score completion tokens (as lapo and TRL keep): with a real
            # vocabulary the prompt positions' logits would cost more than the model.
            logits = model(input_ids=out[part], attention_mask=full_mask[part].long(), logits_to_keep=width + 1).logits
            picked = logits[:, :-1].float().log_softmax(-1).gather(-1, completion[part, :, None])[..., 0]
            (picked * completion_mask[part]).sum().div(completion_mask.sum().clamp(min=1)).backward()
        sync()
        timings.append({"gen_s": gen_s, "step_s": time.perf_counter() - start,
                        "gen_tokens": int(completion_mask.sum()), "train_tokens": int(full_mask.sum())})
    return {"steps": timings}


def policy_config(cfg: dict):
    """The project's PolicyConfig for a run (lapo and floor): LoRA r 8, optionally 4-bit NF4."""
    from lapo_lightning.policy import LoraSettings, PolicyConfig

    return PolicyConfig(model=cfg["model"], lora=LoraSettings(r=8, alpha=16),
                        gradient_checkpointing=cfg["checkpointing"], dtype=cfg["dtype"],
                        load_in_4bit=cfg["load_in_4bit"], bnb_compute_dtype=cfg["dtype"])


def trl_model_kwargs(cfg: dict) -> dict:
    """TRL's from_pretrained arguments matching :func:`policy_config` (PolicyConfig's NF4 settings)."""
    import torch

    kwargs: dict = {"dtype": cfg["dtype"]}
    if cfg["load_in_4bit"]:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, cfg["dtype"]),
            bnb_4bit_use_double_quant=True)
        kwargs["device_map"] = {"": torch_device(cfg)}
    return kwargs


def torch_device(cfg: dict) -> str:
    return "cuda:0" if cfg["device"] == "cuda" else "cpu"


def sync() -> None:
    """Wait for queued CUDA work, so wall-clock timings cover it (no-op on CPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def worker(system: str, cfg: dict) -> None:
    import torch

    workers = {"floor": run_floor, "lapo": run_lapo, "lapo_padded": run_lapo_padded, "lapo_grouped": run_lapo_grouped,
               "trl": run_trl}
    result = workers[system](cfg)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------ orchestration
def run_one(system: str, cfg: dict, timeout: float | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, __file__, "--worker", system, "--cfg", json.dumps(cfg)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{system} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


class Budget:
    """Runs workers until ``seconds`` (None: no limit) are spent: a run is skipped when the
    longest run so far would not fit in what is left, and killed at the deadline. A failed
    worker is reported and the others still run (main exits non-zero after the table)."""

    def __init__(self, seconds: float | None):
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.longest = 0.0
        self.skipped: list[str] = []
        self.failed: list[str] = []

    def run(self, system: str, cfg: dict, label: str) -> dict | None:
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left < max(self.longest, 1.0):
            self.skipped.append(label)
            return None
        start = time.monotonic()
        try:
            result = run_one(system, cfg, timeout=left)
        except subprocess.TimeoutExpired:
            self.skipped.append(label + " (killed at the deadline)")
            return None
        except RuntimeError as error:
            print(f"FAILED {label}: {error}", file=sys.stderr, flush=True)
            self.failed.append(label)
            return None
        self.longest = max(self.longest, time.monotonic() - start)
        print(f"done {label} in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
        return result


def summarise(result: dict, warmup: int) -> dict:
    steps = result["steps"][warmup:] or result["steps"]
    step_s = statistics.median(s["step_s"] for s in steps)
    gen_s = sum(s["gen_s"] for s in steps)
    train_s = sum(s["step_s"] - s["gen_s"] for s in steps)
    return {
        "s_per_step": step_s,
        "gen_tok_s": sum(s["gen_tokens"] for s in steps) / max(gen_s, 1e-9),
        "train_tok_s": sum(s["train_tokens"] for s in steps) / max(train_s, 1e-9),
        "gen_s": gen_s / len(steps),
        "mean_len": sum(s["gen_tokens"] for s in steps) / len(steps),
        # prompt tokens per completion token, the prompt counted once per rollout (as trained)
        "prompt_ratio": sum(s["train_tokens"] - s["gen_tokens"] for s in steps) / max(sum(s["gen_tokens"] for s in steps), 1),
        "peak_rss_mb": result["peak_rss_mb"],
        "peak_gpu_mb": result.get("peak_gpu_mb"),
    }


def table(rows: list[dict]) -> str:
    gpu = any(r.get("peak_gpu_mb") is not None for r in rows)  # the column only where CUDA ran
    lines = ["| workload | system | s/step | gen s/step | gen tok/s | train tok/s | tokens/step | prompt/completion "
             "| peak RSS MB " + ("| peak GPU MB " if gpu else "") + "| lapo/TRL speed |",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * (1 + gpu)]
    for r in rows:
        gpu_cell = f"{r['peak_gpu_mb'] or 0:.0f} | " if gpu else ""
        lines.append(f"| {r['workload']} | {r['system']} | {r['s_per_step']:.2f} | {r['gen_s']:.2f} | "
                     f"{r['gen_tok_s']:.0f} | {r['train_tok_s']:.0f} | {r['mean_len']:.0f} | {r['prompt_ratio']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {gpu_cell}{r.get('speedup', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=SYSTEMS)
    parser.add_argument("--cfg")
    parser.add_argument("--problems", type=int, default=4, help="problems per step (B)")
    parser.add_argument("--group", type=int, default=8, help="completions per problem (G)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--micro", type=int, default=8, help="rollouts per forward/backward")
    parser.add_argument("--hidden", type=int, default=256, help="tiny Llama's width (ignored with --preset)")
    parser.add_argument("--layers", type=int, default=6, help="tiny Llama's depth (ignored with --preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a random-init Qwen2 of this shape instead")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="unquantized weights, and the 4-bit layers' compute")
    parser.add_argument("--load-in-4bit", action="store_true", help="NF4 base (QLoRA) in every system")
    parser.add_argument("--budget-s", type=float, help="stop starting runs when this many seconds are spent")
    parser.add_argument("--steps", type=int, default=4, help="measured steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--kl", type=float, default=0.04)
    parser.add_argument("--checkpointing", choices=("on", "off"), default="on",
                        help="gradient checkpointing in every system (TRL's GRPO default is on)")
    parser.add_argument("--workloads", default="equal,varied",
                        help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--realistic-cap", type=int, default=512,
                        help="the realistic workload's max new tokens (completions uniform up to it); "
                             "the paper's 4,096 on a GPU, 512 keeps a CPU run short")
    parser.add_argument("--bpe-tokenizer", default=BPE_TOKENIZER,
                        help="the realistic workload's tokenizer: a model_source name or a folder")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--scaling", action="store_true", help="our step time as G, B and T double")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one step: checks that nothing rotted")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, json.loads(args.cfg))
    if args.smoke:
        args.problems, args.group, args.max_new_tokens, args.micro = 2, 2, 8, 2
        args.hidden, args.layers, args.steps, args.warmup, args.realistic_cap = 64, 2, 1, 0, 8
    workloads = args.workloads.split(",")
    if unknown := sorted(set(workloads) - set(WORKLOADS)):
        parser.error(f"--workloads: unknown {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device here")
    systems = [s for s in args.systems.split(",") if s != "trl" or _has_trl()]
    budget = Budget(args.budget_s)
    rows: list[dict] = []

    def save() -> None:  # after each workload too, so a run cut short still leaves its rows
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        if args.preset:
            models = build_preset_models(Path(tmp) / "models", args.preset, args.max_new_tokens, args.device,
                                         args.dtype, workloads, args.realistic_cap, args.bpe_tokenizer)
        else:
            models = build_models(Path(tmp) / "models", args.hidden, args.layers, workloads, args.realistic_cap,
                                  args.bpe_tokenizer)
        caps = {w: args.realistic_cap if w == "realistic" else args.max_new_tokens for w in workloads}
        base = {"B": args.problems, "G": args.group, "T": args.max_new_tokens, "micro": args.micro, "kl": args.kl,
                "total_steps": args.steps + args.warmup, "tmp": tmp,
                "checkpointing": args.checkpointing == "on", "device": args.device, "dtype": args.dtype,
                "load_in_4bit": args.load_in_4bit}
        if args.scaling:
            variants = {"base": {}, "2x G": {"G": 2 * args.group}, "2x B": {"B": 2 * args.problems},
                        "2x T": {"T": 2 * args.max_new_tokens}}  # realistic: the model's schedule keeps its cap
            for name, change in variants.items():
                for workload in workloads:
                    cfg = base | {"T": caps[workload]} | change | {"model": models[workload]}
                    result = budget.run("lapo", cfg, f"{workload} {name}/lapo")
                    if result is not None:
                        rows.append({"workload": f"{workload} {name}", "system": "lapo",
                                     **summarise(result, args.warmup)})
                save()
        else:
            for workload in workloads:
                cfg = base | {"model": models[workload], "T": caps[workload]}
                results = {s: budget.run(s, cfg, f"{workload}/{s}") for s in systems}  # alternating
                by_system = {s: summarise(r, args.warmup) for s, r in results.items() if r is not None}
                for system, summary in by_system.items():
                    row = {"workload": workload, "system": system, **summary}
                    if system.startswith("lapo") and "trl" in by_system:
                        row["speedup"] = f"{by_system['trl']['s_per_step'] / summary['s_per_step']:.2f}x"
                    rows.append(row)
                save()
    model = (f"{args.preset} (random Qwen2)" if args.preset else f"llama h{args.hidden} l{args.layers}")
    if args.device != "cpu" or args.load_in_4bit or args.dtype != "float32":
        model += f" {'nf4 + ' if args.load_in_4bit else ''}{args.dtype} on {args.device}"
    realistic = f" (realistic: {args.realistic_cap})" if "realistic" in workloads else ""
    print(f"B={args.problems} G={args.group} T={args.max_new_tokens}{realistic} micro={args.micro} "
          f"model={model} kl={args.kl} checkpointing={args.checkpointing} "
          f"steps={args.steps} (+{args.warmup} warm-up)")
    print(table(rows))
    if budget.skipped:
        print(f"not run, --budget-s {args.budget_s:g} spent: " + ", ".join(budget.skipped))
    save()
    if budget.failed:
        sys.exit("failed (stderr above): " + ", ".join(budget.failed))


def _has_trl() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl") is not None


if __name__ == "__main__":
    main()
