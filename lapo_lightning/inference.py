"""Answer questions with a trained adapter (``lapo answer``, parsed in ``cli/answer.py``).

After stage 2 the model states no budget by default (it has internalised one); ``--budget N``
injects the stage-2 sentence to test budget adherence (paper Table 4). Prompts are rendered
and tokens counted exactly as in training (same template, ``HFGenerate``, lengths incl. EOS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lapo_lightning.policy import ADAPTER_CONFIG, PolicyConfig, is_adapter_dir, load_policy
from lapo_lightning.prompts import PROMPTS, PlainPrompt, PromptTemplate, load_prompt, opens_think
from lapo_lightning.rollout import GenerationConfig, HFGenerate
from lapo_lightning.types import ProblemBatch
from lapo_lightning.verify import after_reasoning, extract_answer


class InferenceError(ValueError):
    """A bad adapter/base/question input; the message is one line and names what to fix."""


@dataclass
class Answer:
    text: str  # the completion, special tokens removed
    answer: str | None  # the extracted final answer (verify.extract_answer)
    tokens: int  # generated tokens, counted as in training (incl. EOS, no padding)


def adapter_base(adapter: str) -> str:
    """The base model recorded in the adapter's ``adapter_config.json``."""
    config = Path(adapter) / ADAPTER_CONFIG
    if not is_adapter_dir(adapter):
        raise InferenceError(f"--adapter: no PEFT adapter at {adapter} (expected adapter_config.json there)")
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError as e:
        raise InferenceError(f"--adapter: {config} is not valid JSON ({e})") from None
    if not base:
        raise InferenceError(f"--adapter: {config} names no base_model_name_or_path; pass --base")
    return base


def check_adapter_weights(adapter: str) -> None:
    """Refuse an adapter whose ``adapter_model.safetensors`` is corrupt or truncated, naming the
    file, before the base model loads (peft would fail later with a bare safetensors error)."""
    from lapo_lightning.evaluation.models import adapter_weights_problem

    if problem := adapter_weights_problem(adapter):
        raise InferenceError(f"--adapter: {problem}")


def load(adapter: str | None, base: str | None = None, dtype: str | None = None):
    """``(model, tokenizer)`` on the best device: CUDA in bfloat16 if present, else CPU float32."""
    if adapter is None and base is None:
        raise InferenceError("give --adapter (a trained adapter folder) or --base (a model to run without one)")
    recorded = adapter_base(adapter) if adapter is not None else None
    if adapter is not None:
        check_adapter_weights(adapter)
    model_name = base or recorded
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    cfg = PolicyConfig(model=model_name, adapter=adapter, dtype=dtype)
    try:
        model, tokenizer = load_policy(cfg)
    except (RuntimeError, ValueError, KeyError) as e:  # shape or module-name mismatch from peft
        if adapter is None:
            raise InferenceError(f"--base: cannot load {model_name}: {_one_line(e)}") from None
        raise InferenceError(
            f"--base {model_name} does not fit the adapter {adapter} (trained on {recorded}): {_one_line(e)}"
        ) from None
    except OSError as e:
        raise InferenceError(f"cannot load base model {model_name} (from {'--base' if base else adapter}): "
                             f"{_one_line(e)}") from None
    return model.to(device).eval(), tokenizer


def generate(model, tokenizer, question: str, budget: int | None = None, max_new_tokens: int = 512,
             temperature: float = 0.0, prompt: PromptTemplate | None = None) -> Answer:
    """One completion for ``question``, rendered and counted exactly as training does
    (``prompt`` None: the paper's plain template)."""
    prompt = prompt or PlainPrompt()
    text = prompt.render(question, budget, tokenizer)
    problems = ProblemBatch(problem_ids=["question"], problems=[question], answers=[""], budgets=[budget])
    gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    rollouts = HFGenerate().sample(model, tokenizer, [text], problems, 1, gen)
    completion = rollouts.texts[0]
    final = after_reasoning(completion, opens_think(text))  # None: still reasoning at the cap
    return Answer(text=completion, answer=None if final is None else extract_answer(final),
                  tokens=int(rollouts.lengths[0]))


def answer(adapter: str | None, question: str, base: str | None = None, budget: int | None = None,
           max_new_tokens: int = 512, temperature: float = 0.0, prompt: PromptTemplate | None = None) -> Answer:
    """Load ``adapter`` on its recorded base (or ``base``) and answer one question.

    ``budget`` None states no budget (the stage-2 default at inference); an int adds the
    budget sentence after ``<think>``, as the prompt's placement says. For many questions,
    call :func:`load` once and :func:`generate` per question.
    """
    model, tokenizer = load(adapter, base)
    return generate(model, tokenizer, question, budget, max_new_tokens, temperature, prompt)


def read_questions(path: str) -> list[str]:
    """One question per line of a text file, or the ``problem`` field of each .jsonl row."""
    file = Path(path)
    if not file.is_file():
        raise InferenceError(f"--file: not found: {path}")
    # Split on "\n" only: splitlines() also breaks on U+2028 and the like, legal inside a JSON string.
    lines = [line.rstrip("\r") for line in file.read_text(encoding="utf-8").split("\n") if line.strip()]
    if file.suffix != ".jsonl":
        return lines
    try:
        return [json.loads(line)["problem"] for line in lines]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InferenceError(f"--file: {path}: each line must be a JSON object with a 'problem' field ({e})") from None


def choose_prompt(name: str | None, adapter: str | None) -> PromptTemplate:
    """``--prompt`` if given, else the template recorded beside the adapter at export, else plain."""
    if name is not None:
        return PROMPTS[name]()
    try:
        recorded = load_prompt(adapter) if adapter is not None else None
    except (ValueError, TypeError, KeyError) as e:
        raise InferenceError(f"--adapter: cannot use the prompt recorded in {adapter}: {_one_line(e)}; "
                             f"choose one with --prompt") from None
    return recorded or PlainPrompt()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]
