"""``lapo check --config FILE [--device-memory GB]``: will this training run fit, before anything loads.

Flow: the config is parsed exactly as ``lapo fit`` parses it (``cli.fit.build_cli`` with
``parse_only``), then every start-up check of ``lapo fit`` runs (``preflight.py``: settings,
data, outputs, model sources, tables, context), then the memory estimate
(``cost.py``), with ``auto`` sizes resolved (``auto_sizes.py``). No weights load and nothing
is downloaded: the model's shape comes from its ``config.json`` when the hub or a local copy
has it, else from the facts shipped in ``models/known.py`` (said in the output).

Two things ``lapo fit`` would refuse are notes here, because a pipeline is checked before it
runs: inputs an earlier stage writes (a stage-1 adapter or length table not there yet), and
a hub model not cached while offline whose shape lapo knows.

Exit status: 0 fits; 1 does not fit (the last line says so, after the one-key changes that
each lower the peak and one combination that fits); 2 bad input (one line each, as ``lapo fit``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = "lapo check --config FILE [--device-memory GB] [lapo fit overrides, e.g. --data.problems_per_step 8]"
# Keys whose change leaves the method as it is (memory and speed only): tried first.
NEUTRAL = ("model.grpo.micro_batch_size", "model.generation.max_rollouts_per_call",
           "model.policy.gradient_checkpointing", "model.policy.load_in_4bit")
# What a combination that fits may change.
COMBINED_FIELDS = (("grpo", "micro_batch_size"), ("generation", "max_new_tokens"), ("policy", "gradient_checkpointing"),
                   ("policy", "load_in_4bit"), ("generation", "max_rollouts_per_call"), (None, "problems_per_step"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lapo check", usage=USAGE, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c", required=True, help="a lapo fit YAML config")
    parser.add_argument("--device-memory", type=float, metavar="GB",
                        help="the card's memory in GB (1e9 bytes); default: the visible GPU, else this machine's RAM")
    args, overrides = parser.parse_known_args(argv)
    try:
        return check(args.config, args.device_memory, overrides)
    except BadInput as err:
        print(f"lapo check: {err}", file=sys.stderr)
        return 2


class BadInput(ValueError):
    """Input that cannot be checked: one line, exit status 2."""


def check(config: str, device_memory_gb: float | None, overrides: list[str]) -> int:
    from lapo_lightning.safety.auto_sizes import AutoSizeError, resolve_auto
    from lapo_lightning.safety.cost import GB, weight_bytes
    from lapo_lightning.safety.cost_advice import RunSettings, estimate_table, what_lowers_it
    from lapo_lightning.models.shape import UnknownOffline, UnsupportedModel, read_shape_and_source
    from lapo_lightning.cli.fit import ConfigProblems, build_cli, refuse

    if device_memory_gb is not None and not device_memory_gb > 0:
        raise BadInput(f"--device-memory must be a positive number of GB, got {device_memory_gb}")
    if not Path(config).is_file():
        raise BadInput(f"--config: no file at {config}")
    try:
        cli = build_cli(["--config", config, *overrides], run=False, parse_only=True)
    except ConfigProblems as err:  # already printed, one line each
        return int(err.code)
    problems, notes, built = startup_check(cli.config)
    if problems:
        return int(refuse(problems, "lapo check").code)  # one line each, as lapo fit prints them
    policy, grpo, generation, data = (built.get(k) for k in ("model.policy", "model.grpo", "model.generation", "data"))
    if policy is None or grpo is None or generation is None or not hasattr(data, "problems_per_step"):
        raise BadInput(f"{config}: not a GRPO training config (needs model.policy, model.grpo, model.generation and "
                       "data.problems_per_step); lapo check estimates GRPO training runs")
    try:
        shape, source = read_shape_and_source(policy.model, policy.trust_remote_code)
    except (UnknownOffline, UnsupportedModel) as err:
        raise BadInput(str(err) if isinstance(err, UnknownOffline) else f"no memory estimate for {policy.model}: {err}")
    notes.append(f"architecture of {policy.model} from {source}")
    prompt_tokens, prompt_note = longest_prompt(built, policy, generation)
    notes += [prompt_note] if prompt_note else []
    total, device = device_bytes(device_memory_gb)
    run = RunSettings(shape, policy, grpo, generation, data.problems_per_step, prompt_tokens)
    weights = weight_bytes(shape, policy.dtype, policy.load_in_4bit, policy.bnb_double_quant)
    if weights > total:
        raise BadInput(f"--device-memory: the model's weights alone need {weights / GB:.1f} GB, more than the "
                       f"{total / GB:.1f} GB of {device}")
    try:
        run, chosen = resolve_auto(run, total)
    except AutoSizeError as err:
        print(f"lapo check: {err}")
        print(f"auto sizes of {policy.model} on {total / GB:.1f} GB: does not fit")
        return 1
    est = run.estimate()
    print(estimate_table(est))
    print(f"  {'device':<14} {device}: {total / GB:.1f} GB")
    for line in chosen:
        print(f"  {'auto':<14} {line}")
    for line in notes:
        print(f"  {'note':<14} {line}")
    verdict = f"peak {est.peak_bytes / GB:.1f} GB of {total / GB:.1f} GB"
    if est.peak_bytes <= total:
        print(f"{verdict}: fits")
        return 0
    print("Each of these lowers the peak: " + ("; ".join(what_lowers_it(run)) or "none of the usual keys"))
    combination = combination_that_fits(run, total)
    print("Together these fit: " + ", ".join(combination) if combination
          else "No combination of those keys fits: a smaller model or a larger card is needed")
    print(f"{verdict}: does not fit")
    return 1


def startup_check(cfg) -> tuple[list[str], list[str], object]:
    """``lapo fit``'s start-up check (``preflight.check``), with inputs an earlier stage writes and an
    uncached hub model of known shape turned into notes. Returns (problems, notes, built objects)."""
    from lapo_lightning.safety import preflight
    from lapo_lightning.models.known import KNOWN_MODELS
    from lapo_lightning.models.source import availability_problem

    built = preflight.Built()
    problems = preflight.check_settings(cfg, built)
    policy = built.get("model.policy")
    offline = policy is not None and policy.model in KNOWN_MODELS and availability_problem(policy.model) is not None
    pending = not_written_yet(built)
    skip = tuple(f"{key}:" for key in pending) + (("model.policy.model:", "model.policy.tokenizer:") if offline else ())
    problems += preflight.check_inputs(cfg, built, skip=skip, context=not offline)
    notes = [f"{key}: {path} does not exist yet (an earlier stage writes it)" for key, path in pending.items()]
    if offline:
        notes.append(f"{policy.model} is not in the local Hugging Face cache: the prompts were not tokenized and the "
                     "model's context was not checked")
    return preflight.dedupe(problems), notes, built


def not_written_yet(built) -> dict[str, str]:
    """Input adapters and length tables that do not exist yet (an earlier stage writes them), by
    config key. The estimate then uses ``model.policy.lora`` for the adapter's rank."""
    owners = [("model.policy.adapter", built.get("model.policy"), "adapter"),
              ("model.reference.adapter", built.get("model.reference"), "adapter")]
    owners += [(f"{key}.table", callback, "table") for key, callback in built.objects.items()
               if key.startswith("trainer.callbacks[")]
    found = {key: getattr(owner, name, None) for key, owner, name in owners}
    return {key: path for key, path in found.items()
            if isinstance(path, str) and path and not Path(path).expanduser().exists()}


def longest_prompt(built, policy, generation) -> tuple[int, str | None]:
    """(tokens of the longest training prompt, a note when they were estimated without the tokenizer).

    Without the tokenizer (offline, not cached) the longest rendered prompt's characters / 3
    are used: BPE tokenizers average 3.5-4 characters per token on English and LaTeX, so this
    errs long.
    """
    from lapo_lightning.safety.cost import DEFAULT_PROMPT_TOKENS
    from lapo_lightning.safety.cost_advice import longest_prompt_tokens
    from lapo_lightning.policy import load_tokenizer
    from lapo_lightning.prompts import PlainPrompt

    prompt = built.get("model.prompt") or PlainPrompt()
    problems = [p.problem for p in getattr(built.get("data"), "train_problems", None) or []]
    stage2 = any(getattr(cb, "table", None) for key, cb in built.objects.items() if key.startswith("trainer.callbacks["))
    budget = generation.max_new_tokens if stage2 else None
    try:
        tokenizer = load_tokenizer(policy)
    except Exception:  # noqa: BLE001 - offline and not cached, or any other reason it cannot load
        if not problems:
            return DEFAULT_PROMPT_TOKENS, f"no training problems to measure: prompts taken as {DEFAULT_PROMPT_TOKENS} tokens"
        longest = max(len(prompt.render(p, budget, None)) for p in problems)
        return -(-longest // 3), (f"tokenizer not available offline: the longest prompt ({longest} characters) taken "
                                  f"as {-(-longest // 3)} tokens (characters / 3, which errs long)")
    return longest_prompt_tokens(tokenizer, prompt, problems, budget), None


def device_bytes(device_memory_gb: float | None) -> tuple[int, str]:
    """(total bytes, a name): the given card size, else the visible GPU, else this machine's RAM."""
    import torch

    from lapo_lightning.safety.cost import GB
    from lapo_lightning.safety.memory_check import device_total_memory

    if device_memory_gb is not None:
        return int(device_memory_gb * GB), f"a {device_memory_gb:g} GB card (--device-memory)"
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    total = device_total_memory(device)
    if total is None:
        raise BadInput(f"the memory of {device} is unknown here: give --device-memory GB")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "this machine's RAM (no GPU visible)"
    return total, f"{device} ({name})"


def combination_that_fits(run, total: int) -> list[str] | None:
    """Settings that together bring the peak under ``total``, as ``key value`` strings; None if
    the keys cannot. Found greedily (the largest one-key saving first, repeated), first among
    the keys that leave the method as it is (:data:`NEUTRAL`), then among all of them."""
    for keys in (NEUTRAL, None):
        fitting = _greedy(run, total, keys)
        if fitting is not None:
            return settings_changed(run, fitting)
    return None


def _greedy(run, total: int, keys: tuple[str, ...] | None):
    from lapo_lightning.safety.cost_advice import single_changes

    current = run
    for _ in range(24):
        if current.estimate().peak_bytes <= total:
            return current
        options = [(changed.estimate().peak_bytes, i, changed) for i, (text, changed) in enumerate(single_changes(current))
                   if keys is None or text.startswith(keys)]
        if not options or min(options)[0] >= current.estimate().peak_bytes:
            return None
        current = min(options)[2]
    return None


def settings_changed(before, after) -> list[str]:
    """``["model.grpo.micro_batch_size 1", ...]``: what differs between two RunSettings."""
    out = []
    for section, name in COMBINED_FIELDS:
        old = getattr(getattr(before, section), name) if section else getattr(before, name)
        new = getattr(getattr(after, section), name) if section else getattr(after, name)
        if old != new:
            key = f"model.{section}.{name}" if section else f"data.{name}"
            out.append(f"{key} {str(new).lower() if isinstance(new, bool) else new}")
    return out

