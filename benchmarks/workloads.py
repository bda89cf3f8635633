"""The workloads the GRPO step benchmarks run: random-init Qwen2 / Llama models whose completion
lengths are set by construction, their prompts and problems.

Where it sits: ``trl_compare.py`` (lapo / TRL / floor side by side), ``stage_steps.py``,
``cuda_train_pass.py`` and ``decode_speed.py`` build their models here. ``equal``: EOS is never
sampled, every completion runs to the cap; ``varied``: lengths spread over >10x; ``realistic``:
the paper's stage-2 prompt on MATH-500 rows through SmolLM2's BPE tokenizer, completion lengths
uniform up to a cap (:func:`install_uniform_stop`). ``PRESETS`` are the shapes (DeepSeek-R1-Distill-
Qwen-1.5B's, and a test-sized one).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the work tree's lapo_lightning, installed or not
from lapo_lightning.prompts import PlainPrompt  # noqa: E402  (stdlib only: cheap)

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
