"""``lapo eval --config configs/eval.yaml``: every model on every benchmark, one report folder.

Flow: :class:`EvalCLI` (a LightningCLI over ``EvalModule`` + ``BenchmarkDataModule``, built
with ``run=False``) parses the YAML; :func:`run_evaluation` checks every model, benchmark and
budget setting (one error listing all problems, before any weights load), checks that the
report folder was not made with other settings, then runs ``trainer.test`` once per model and
rewrites the report after each. Re-running the same command resumes from the records.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from lapo_lightning.cli.setup import prepare_config_parsing
from lapo_lightning.evaluation.data import BenchmarkDataModule
from lapo_lightning.evaluation.models import EvalError
from lapo_lightning.evaluation.module import EvalModule
from lapo_lightning.evaluation.records import RecordStore
from lapo_lightning.evaluation.report import write_report

# Settings whose change makes earlier records of the same folder incomparable.
_FROZEN = ("generation", "prompt")
# Generation dominates; more DataLoader workers would not help (Lightning suggests them).
_QUIET = (r".*does not have many workers.*",)
_GROUPS = (("models", "name"), ("benchmarks", "name"), ("conditions", "label"))


def settings_of(module: EvalModule, datamodule: BenchmarkDataModule) -> dict:
    """What the report folder was made with (stored in results.json and settings.json)."""
    prompt = {"class": type(module.prompt).__name__, **{k: v for k, v in vars(module.prompt).items()
                                                        if not k.startswith("_")}}
    return {
        "generation": asdict(module.generation),
        "prompt": prompt,
        "sampler": type(module.sampler).__name__,
        "verifier": type(module.verifier).__name__,
        "models": [asdict(m) for m in module.models],
        "benchmarks": [{"name": b.name, "path": b.path, "samples": b.samples, "level_field": b.level_field}
                       for b in datamodule.benchmarks],
        "conditions": [asdict(c) for c in datamodule.conditions()],
        "max_problems": datamodule.max_problems,
    }


def _comparable(section: dict | None) -> dict | None:
    # How many sequences share one generate() call is a memory setting, free to change on resume.
    return None if section is None else {k: v for k, v in section.items() if k != "max_rollouts_per_call"}


def check_settings(folder: Path, settings: dict) -> list[str]:
    """Differences from the settings an earlier run wrote into ``folder`` that break resuming."""
    path = folder / "settings.json"
    if not path.is_file():
        return []
    old = json.loads(path.read_text(encoding="utf-8"))
    settings = json.loads(json.dumps(settings, default=str))  # compare as stored (tuples -> lists)
    problems = [f"{key}: was {old.get(key)}, now {settings[key]}" for key in _FROZEN
                if _comparable(old.get(key)) != _comparable(settings[key])]
    for (group, name_key), keys in zip(_GROUPS, (("model", "adapter", "dtype", "load_in_4bit", "tokenizer"),
                                                 ("path",), ("fixed", "table"))):
        before = {item[name_key]: item for item in old.get(group, [])}
        for item in settings[group]:
            prev = before.get(item[name_key])
            for key in keys:
                if prev is not None and prev.get(key) != item.get(key):
                    problems.append(f"{group} {item[name_key]!r}.{key}: was {prev.get(key)!r}, now {item.get(key)!r}")
    if problems:
        return [f"model.report_dir: {folder} holds records made with other settings ("
                + "; ".join(problems) + "). Use a new report_dir, or delete that folder to start over."]
    return []


def _remember(path: Path, settings: dict) -> dict:
    """``settings`` plus models, benchmarks and conditions that only earlier runs named, so a
    name dropped from one run and reused later is still checked against its old records."""
    if not path.is_file():
        return settings
    old, merged = json.loads(path.read_text(encoding="utf-8")), dict(settings)
    for group, name_key in _GROUPS:
        names = {item[name_key] for item in settings[group]}
        merged[group] = settings[group] + [item for item in old.get(group, []) if item[name_key] not in names]
    return merged


def run_evaluation(module: EvalModule, datamodule: BenchmarkDataModule, trainer: pl.Trainer,
                   config_text: str | None = None) -> list[dict]:
    """Evaluate every model of ``module`` on ``datamodule``; returns the result rows."""
    errors = datamodule.check() + module.check()
    folder = Path(module.report_dir)
    if folder.exists() and not folder.is_dir():
        errors.append(f"model.report_dir: {folder} exists and is not a folder")
    settings = None
    if not errors:
        settings = settings_of(module, datamodule)
        errors += check_settings(folder, settings)
    if errors:
        raise EvalError("cannot start the evaluation:\n  " + "\n  ".join(errors))
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        remembered = _remember(folder / "settings.json", settings)
        (folder / "settings.json").write_text(json.dumps(remembered, indent=1, default=str) + "\n", encoding="utf-8")
        if config_text is not None:
            (folder / "config.yaml").write_text(config_text, encoding="utf-8")
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        for i, spec in enumerate(module.models):
            module.select(spec)
            trainer.test(module, datamodule=datamodule, verbose=False)
            trainer.strategy.barrier()  # every process's records are on disk before rank 0 reads them
            if trainer.is_global_zero:  # after each model, so an interrupted run leaves a partial report
                plots = module.plots and i == len(module.models) - 1
                records = RecordStore(folder).records()  # the intervals, and the plots at the end
                write_report(folder, list(module.results.values()), records, settings, plots_too=plots)
    module.release()
    return list(module.results.values())


class EvalCLI(LightningCLI):
    """LightningCLI for evaluation: ``model`` = EvalModule, ``data`` = BenchmarkDataModule.

    Trainer defaults suit evaluation (no logger, checkpoints or Lightning progress bar: the
    module shows its own over problems x samples); the YAML can still set any of them.
    """

    def __init__(self, args: list[str] | None = None, run: bool = False, **kwargs) -> None:
        prepare_config_parsing()  # short class_path names (CompactDecode, ...) need their classes imported
        kwargs.setdefault("save_config_callback", None)  # the config goes into the report folder instead
        kwargs.setdefault("seed_everything_default", False)  # sampling is seeded per batch (EvalModule.seed)
        kwargs.setdefault("trainer_defaults", {"logger": False, "enable_checkpointing": False,
                                               "enable_progress_bar": False, "enable_model_summary": False})
        super().__init__(EvalModule, BenchmarkDataModule, args=args, run=run, **kwargs)


def main(args: list[str]) -> EvalCLI:
    """``lapo eval --config configs/eval.yaml [--model.report_dir ...]``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `lapo eval ...` passes args without the subcommand while sys.argv still holds it.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    try:
        cli = EvalCLI(args=args)  # parses and builds the settings; no weights load here
    except ValueError as e:  # a setting a config dataclass refuses (top_p 1.5, say)
        raise refuse(e) from None
    try:
        run_evaluation(cli.model, cli.datamodule, cli.trainer, config_text=cli.parser.dump(cli.config))
    except EvalError as e:  # a benchmark file, model or report folder that cannot be used
        raise refuse(e) from None
    return cli


def refuse(error: ValueError) -> SystemExit:
    """Bad input, as ``lapo fit``'s start-up check reports it: one line per problem, exit status 2."""
    from lapo_lightning.cli.fit import refuse as refuse_fit

    lines = [line.strip() for line in str(error).splitlines()]
    return refuse_fit(lines[1:] if len(lines) > 1 and lines[0].endswith(":") else lines, "lapo eval")
