"""``lapo fit``'s start-up check (lapo_lightning/safety/preflight.py, parse_errors.py, fit_cli.py): every bad
input that can be found without weights ends in one line per problem naming the key
(or file and line), exit status 2, no jsonargparse namespace dump and no traceback.

Each CLI case runs ``lapo fit`` in-process on a debug config with the weight loaders replaced by
a failure, so a check that ran after the weights would fail the test.
Run: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_preflight.py -q
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from clitools import ROOT, config_in, fit
from lapo_lightning.safety import preflight, preflight_inputs, preflight_settings
from lapo_lightning.config import ConfigError, GRPOConfig, OptimConfig, training_problems
from lapo_lightning.cli.parse_errors import summarize
from lapo_lightning.policy import load_base_model as REAL_LOAD_BASE_MODEL  # the fixture below replaces it


@pytest.fixture(autouse=True)
def no_weights(monkeypatch):
    """Run from the checkout (configs name data/...), and fail if any weights load."""
    import lapo_lightning.policy as policy

    monkeypatch.chdir(ROOT)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("weights loaded before the config was checked")

    monkeypatch.setattr(policy, "load_base_model", refuse)
    monkeypatch.setattr(policy, "load_policy", refuse)
    return calls


def refused(capsys, config: Path, *extra: str) -> list[str]:
    """Run ``lapo fit``; assert it exits 2 with a clean report; return the problem lines."""
    with pytest.raises(SystemExit) as exit_:
        fit(config, *extra)
    # A logging handler bound to the stderr of an earlier test reports its closed stream with a
    # traceback of its own ("--- Logging error ---" ... "Arguments: ()"): not this command's output.
    err = re.sub(r"--- Logging error ---.*?Arguments: \(\)\n", "", capsys.readouterr().err, flags=re.S)
    assert exit_.value.code == 2, err
    assert "Namespace(" not in err and "Traceback" not in err and "Given value" not in err, err
    header = [i for i, line in enumerate(err.splitlines()) if line.startswith("lapo fit: ")]
    assert len(header) == 1, err
    lines = [line.strip() for line in err.splitlines()[header[0] + 1:] if line.startswith("  ")]
    n = int(err.splitlines()[header[0]].split()[2])
    assert n == len(lines) == len(getattr(exit_.value, "problems", lines)), err
    return lines


def grpo(tmp_path: Path, **replace: str) -> Path:
    return config_in(tmp_path, "debug/grpo.yaml", **replace)


# ----- settings: one line naming the key, instead of a namespace dump -------------------------
SETTINGS = [
    ({"group_size: 4": "group_size: 1"},
     "model.grpo.group_size: must be >= 2, GRPO compares completions of one problem (got 1)"),
    ({"group_size: 4": "group_size: -2"},
     "model.grpo.group_size: must be >= 2, GRPO compares completions of one problem (got -2)"),
    ({"lr: 1.0e-3": "lr: 0"}, "model.optim.lr: must be > 0 (got 0.0)"),
    ({"max_new_tokens: 24": "max_new_tokens: 0"}, "model.generation.max_new_tokens: must be > 0 (got 0)"),
    ({"temperature: 1.0": "temperature: 1.0\n    top_p: 0"}, "model.generation.top_p: must be in (0, 1] (got 0.0)"),
    ({'pattern: "[0-9]"': 'pattern: "([0-9]"'},
     "model.rewards[1]: RegexMatch: invalid pattern '([0-9]': missing ), unterminated subpattern at position 0"),
    ({"  grpo:\n": "  reference: {class_path: NoReference}\n  grpo:\n"},
     "model.reference: NoReference has no weights for the KL penalty model.grpo.kl_coef=0.001; set "
     "model.grpo.kl_coef: 0 or pick a reference (AdapterDisabled, FrozenAdapter)"),
]


@pytest.mark.parametrize(("replace", "line"), SETTINGS,
                         ids=["group_size_1", "group_size_negative", "lr_0", "max_new_tokens_0", "top_p_0",
                              "bad_regex", "kl_without_reference"])
def test_an_invalid_setting_is_one_line_naming_its_key(tmp_path, capsys, replace, line):
    assert refused(capsys, grpo(tmp_path, **replace)) == [line]


def test_reversed_percentiles_name_the_reward(tmp_path, capsys):
    config = config_in(tmp_path, "debug/stage1.yaml", **{"low_pct: 30, high_pct: 70": "low_pct: 70, high_pct: 30"})
    assert refused(capsys, config) == ["model.rewards[1]: LengthBand: need 0 <= low_pct <= high_pct <= 100, "
                                       "got 70.0, 30.0"]


@pytest.mark.parametrize(("pcts", "got"), [("low_pct: 70, high_pct: 30", "low_pct=70.0, high_pct=30.0"),
                                           ("low_pct: 50, high_pct: 50", "low_pct=50.0, high_pct=50.0"),
                                           ("low_pct: -5, high_pct: 120", "low_pct=-5.0, high_pct=120.0")],
                         ids=["reversed", "equal", "out_of_range"])
def test_the_collector_percentiles_name_the_callback(tmp_path, capsys, pcts, got):
    collector = "class_path: LengthStatsCollector\n      init_args: {"
    config = config_in(tmp_path, "debug/stage1.yaml", **{collector: f"{collector}{pcts}, "})
    assert refused(capsys, config) == ["trainer.callbacks[0]: LengthStatsCollector: need 0 <= low_pct < high_pct "
                                       f"<= 100, got {got}"]


def test_every_problem_is_reported_in_one_pass(tmp_path, capsys):
    config = grpo(tmp_path, **{"group_size: 4": "group_size: 1", "lr: 1.0e-3": "lr: 0",
                               "warmup_steps: 1": "warmup_steps: -1", 'pattern: "[0-9]"': 'pattern: "("',
                               "temperature: 1.0": "temperature: 0\n    top_p: 0"})
    lines = refused(capsys, config, "--model.policy.model", "./no_such_model", "--export.dirpath", "README.md/x")
    keys = sorted(line.split(":")[0].split(" ")[0] for line in lines)
    assert keys == ["export.dirpath", "model.generation.top_p", "model.grpo.group_size", "model.optim.lr",
                    "model.optim.warmup_steps", "model.policy.model", "model.rewards[1]"], lines


# ----- silently accepted before: refused with the reason ---------------------------------------
def test_training_at_temperature_0_is_refused(tmp_path, capsys):
    assert refused(capsys, grpo(tmp_path, **{"temperature: 1.0": "temperature: 0"})) == [
        "model.generation.temperature: 0 is greedy decoding, so the 4 rollouts of a problem are identical, every "
        "advantage is 0 and nothing is learned; sample with a temperature > 0 (the paper uses 1.0)"]


def test_a_generation_cap_below_the_training_minimum_is_refused(tmp_path, capsys):
    assert refused(capsys, grpo(tmp_path, **{"max_new_tokens: 24": "max_new_tokens: 1"})) == [
        "model.generation.max_new_tokens: 1 is below the training minimum of 8: nearly every rollout is cut off "
        "before an answer and graded wrong"]


def test_a_negative_reward_weight_needs_the_opt_in(tmp_path, capsys):
    config = grpo(tmp_path, **{"weight: 0.5": "weight: -0.5", "lr: 1.0e-3": "lr: 0"})
    negative = ("model.rewards[1].weight: -0.5 is negative, which rewards what this reward was written to discourage; "
                "if a penalty is meant, set model.grpo.allow_negative_reward_weights: true")
    assert refused(capsys, config) == ["model.optim.lr: must be > 0 (got 0.0)", negative]
    # Opted in: only the unrelated lr problem remains (it stops the run before any training).
    assert refused(capsys, config, "--model.grpo.allow_negative_reward_weights", "true") == [
        "model.optim.lr: must be > 0 (got 0.0)"]


def test_a_prompt_longer_than_the_context_names_the_problem(tmp_path, capsys):
    data = tmp_path / "long.jsonl"
    rows = [{"id": f"ok{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(7)]
    rows.append({"id": "too-long", "problem": "What is " + " + ".join(["1"] * 700) + "?", "answer": "700"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = refused(capsys, grpo(tmp_path, **{"train_file: data/math_train.jsonl": f"train_file: {data}"}))
    assert len(lines) == 1 and lines[0].startswith(f"data.train_file: problem 'too-long' in {data} needs "), lines
    assert lines[0].endswith("+ model.generation.max_new_tokens 24 = " + lines[0].split(" = ")[1].split(",")[0]
                             + ", over the model's context of 2048 tokens (max_position_embeddings of tiny:llama); "
                             "shorten or drop it, or lower model.generation.max_new_tokens"), lines


@pytest.mark.parametrize(("row", "why"), [
    ({"id": "x", "problem": "p", "answer": ["3"]}, "field 'answer' in {path} line 2 is a list ([\"3\"]), "
                                                   "expected text or a number"),
    ({"id": "../../escape", "problem": "p", "answer": "3"}, "field 'id' in {path} line 2 is '../../escape': a '..' "
                                                            "path segment is not allowed in ids"),
], ids=["list_answer", "dotdot_id"])
def test_bad_rows_name_file_line_and_field(tmp_path, capsys, row, why):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}) + "\n" + json.dumps(row) + "\n")
    config = grpo(tmp_path, **{"train_file: data/math_train.jsonl": f"train_file: {data}", "val_fraction: 0.25": ""})
    field = "answer" if "answer'" in why else "id"
    assert refused(capsys, config) == [f"data.fields.{field}: " + why.format(path=data)]


# ----- parse errors: plugins and types ---------------------------------------------------------
@pytest.mark.parametrize(("replace", "line"), [
    ({"class_path: Accuracy": "class_path: NoSuchReward"},
     "model.rewards: unknown class_path 'NoSuchReward': no such class among the plugins (a full dotted path such as "
     "my_package.module.MyClass also works)"),
    ({'pattern: "[0-9]"': 'patern: "[0-9]"'},
     "model.rewards (RegexMatch): unknown init argument 'patern'; RegexMatch takes: pattern, weight, name"),
    ({"group_size: 4": "group_size: four"}, "model.grpo.group_size: expected int, got 'four'"),
    ({"group_size: 4": "gruop_size: 4"}, "model.grpo.gruop_size: unknown option"),
    ({"class_path: SampleLogger": "class_path: SampleLoger"},
     "trainer.callbacks: unknown class_path 'SampleLoger': no such class among the plugins (a full dotted path "
     "such as my_package.module.MyClass also works)"),
], ids=["unknown_class", "unknown_init_arg", "wrong_type", "unknown_option", "unknown_callback"])
def test_a_parse_error_is_one_line_naming_its_key(tmp_path, capsys, replace, line):
    assert refused(capsys, grpo(tmp_path, **replace)) == [line]


def test_summarize_keeps_the_leaves_of_a_nested_report():
    report = """error: Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'lapo_lightning.GRPOModule':
        Parser key "rewards":
          Does not validate against any of the Union subtypes
          Errors:
            - Problem with given class_path 'lapo_lightning.RegexMatch':
                Option 'patern' is not accepted
            - Expected a <class 'NoneType'>
          Given value type: <class 'list'>
          Given value: [Namespace(class_path='lapo_lightning.Accuracy')]
        Parser key "grpo.group_size":
          Expected a <class 'int'>. Got value: abc
    - Expected a <class 'NoneType'>
  Given value: {'policy': {'model': 'tiny:llama'}}"""
    assert summarize(report) == ["model.rewards (RegexMatch): unknown init argument 'patern'",
                                 "model.grpo.group_size: expected int, got 'abc'"]
    assert summarize("Subcommand 'fit' does not accept option 'trainer.max_stepz'") == [
        "trainer.max_stepz: unknown option"]


# ----- inputs: adapters, tables, model names, output folders -----------------------------------
def test_adapter_folders_are_checked_before_weights(tmp_path, capsys):
    empty = tmp_path / "empty_adapter"
    empty.mkdir()
    assert refused(capsys, grpo(tmp_path), "--model.policy.adapter", str(tmp_path / "nope")) == [
        f"model.policy.adapter: no adapter folder at {tmp_path / 'nope'} (a previous stage writes it: run that "
        "stage first, or fix the path)"]
    assert refused(capsys, grpo(tmp_path), "--model.policy.adapter", str(empty)) == [
        f"model.policy.adapter: {empty} is not a PEFT adapter folder (no adapter_config.json there)"]


def test_a_corrupt_adapter_file_is_named(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny:llama", "r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json header")
    lines = refused(capsys, grpo(tmp_path), "--model.policy.adapter", str(adapter))
    assert len(lines) == 1 and lines[0].startswith(
        f"model.policy.adapter: {adapter / 'adapter_model.safetensors'} is not a readable safetensors file ("), lines
    assert lines[0].endswith("; re-export the adapter (or restore it from a checkpoint)")


def test_stage2_tables_must_exist_and_parse(tmp_path, capsys):
    table = tmp_path / "runs" / "debug_stage1" / "length_table.json"
    lines = refused(capsys, config_in(tmp_path, "debug/stage2.yaml"))
    assert (f"trainer.callbacks[0].table: length table not found: {table} (stage 1 writes it at the end of fit)"
            in lines), lines
    assert any(line.startswith("model.policy.adapter: no adapter folder at") for line in lines), lines
    table.parent.mkdir(parents=True)
    table.write_text("{half a table")
    lines = refused(capsys, config_in(tmp_path, "debug/stage2.yaml"))
    assert any(line.startswith(f"trainer.callbacks[0].table: {table}: corrupt length table, not valid JSON")
               for line in lines), lines


def test_a_missing_local_model_folder_is_named(tmp_path, capsys):
    assert refused(capsys, grpo(tmp_path), "--model.policy.model", "./no_such_model") == [
        "model.policy.model: folder ./no_such_model does not exist (found nothing there; a local model is a folder "
        "with config.json, e.g. from save_pretrained)"]


def test_a_hub_id_missing_from_the_cache_while_offline_says_how_to_fix_it(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    lines = refused(capsys, grpo(tmp_path), "--model.policy.model", "no-such-org/no-such-model")
    assert lines == [
        "model.policy.model: 'no-such-org/no-such-model' is not a local folder, so a Hugging Face hub id, and it is "
        f"not in the local cache ({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE=1 forbids downloading it; download "
        "it once online (`hf download no-such-org/no-such-model`), unset HF_HUB_OFFLINE, or point model.policy.model "
        "at a local folder"]


def test_output_folders_must_be_writable_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    config = config_in(tmp_path, "debug/stage1.yaml", **{
        f"dirpath: {tmp_path}/runs/debug_stage1/checkpoints": f"dirpath: {blocker}/checkpoints"})
    lines = refused(capsys, config, "--export.dirpath", f"{blocker}/adapter", "--trainer.default_root_dir",
                    f"{blocker}/root")
    assert lines == [
        f"trainer.default_root_dir: cannot create {blocker}/root: {blocker} is a file, not a folder",
        f"export.dirpath: cannot create {blocker}/adapter: {blocker} is a file, not a folder",
        f"trainer.callbacks[1].dirpath: cannot create {blocker}/checkpoints: {blocker} is a file, not a folder",
    ]


# ----- before any weights, within seconds ------------------------------------------------------
def test_a_bad_config_fails_within_seconds_and_loads_no_weights(tmp_path, capsys, no_weights):
    config = grpo(tmp_path, **{"group_size: 4": "group_size: 1"})
    start = time.perf_counter()
    refused(capsys, config, "--model.policy.adapter", str(tmp_path / "nope"))
    assert time.perf_counter() - start < 20  # ~2 s on an idle machine: parse, read the data file
    assert no_weights == []


def test_the_check_runs_before_instantiation_and_weights(tmp_path, capsys, monkeypatch):
    import lapo_lightning.cli.fit as fit_cli

    order = []
    real_check = fit_cli.check
    monkeypatch.setattr(fit_cli, "check", lambda cfg, inputs: order.append("check") or real_check(cfg, inputs))
    monkeypatch.setattr(fit_cli.LightningCLI, "instantiate_classes", lambda self: order.append("instantiate"))
    refused(capsys, grpo(tmp_path, **{"lr: 1.0e-3": "lr: 0"}))
    assert order == ["check"]


def test_a_good_config_passes_the_check_in_seconds(tmp_path, monkeypatch):
    import lapo_lightning.cli.fit as fit_cli

    parsed = {}

    def stop(self):
        parsed["cfg"] = self.config["fit"]
        raise KeyboardInterrupt  # stop before anything is built

    monkeypatch.setattr(fit_cli.LapoCLI, "instantiate_classes", stop)
    with pytest.raises(KeyboardInterrupt):
        fit(grpo(tmp_path))
    start = time.perf_counter()
    assert preflight.check(parsed["cfg"]) == []
    assert time.perf_counter() - start < 10  # ~0.5 s: the data file, the tokenizer, 32 prompts


# ----- the rules as pure functions -------------------------------------------------------------
def test_settings_dataclasses_list_every_problem():
    with pytest.raises(ConfigError) as err:
        GRPOConfig(group_size=1, kl_coef=-1, micro_batch_size=0, max_grad_norm=0)
    assert err.value.problems == [
        "model.grpo.group_size: must be >= 2, GRPO compares completions of one problem (got 1)",
        "model.grpo.kl_coef: must be >= 0 (got -1)",
        "model.grpo.micro_batch_size: must be >= 1 (got 0)",
        "model.grpo.max_grad_norm: must be > 0, or null to disable clipping (got 0)",
    ]
    assert OptimConfig().problems() == [] and GRPOConfig().problems() == []


def test_training_rules():
    ok = dict(group_size=4, micro_batch_size=8, kl_coef=0.0, temperature=1.0, max_new_tokens=64, reward_weights=[],
              problems_per_step=2)
    assert training_problems(**ok) == []
    assert training_problems(**{**ok, "temperature": 0.0, "group_size": 1}) == []  # nothing to compare anyway
    assert training_problems(**{**ok, "max_new_tokens": 8}) == []
    assert [p.split(":")[0] for p in training_problems(**{**ok, "max_new_tokens": 7, "temperature": 0.0})] == [
        "model.generation.temperature", "model.generation.max_new_tokens"]
    assert training_problems(**{**ok, "reward_weights": [("model.rewards[0]", -1.0)]})[0].startswith(
        "model.rewards[0].weight: -1.0 is negative")
    assert training_problems(**{**ok, "reward_weights": [("model.rewards[0]", -1.0)],
                                "allow_negative_reward_weights": True}) == []
    assert training_problems(**{**ok, "kl_coef": 0.1, "reference_needs_forward": False})[0].startswith(
        "model.reference: NoReference")
    assert training_problems(**{**ok, "problems_per_step": 3, "micro_batch_size": 8}) == [
        "model.grpo.micro_batch_size: 8 must divide the rollout batch data.problems_per_step * "
        "model.grpo.group_size = 3 * 4"]


def test_the_module_refuses_kl_without_a_reference_with_the_shared_rule():
    from lapo_lightning.config import kl_reference_problem
    from lapo_lightning.module import GRPOModule
    from lapo_lightning.reference import NoReference

    with pytest.raises(ValueError) as err:
        GRPOModule(grpo=GRPOConfig(kl_coef=0.1), reference=NoReference())
    assert str(err.value) == kl_reference_problem(0.1, reference_needs_forward=False)
    assert GRPOModule(grpo=GRPOConfig(kl_coef=0.0), reference=NoReference()).reference.needs_forward is False


def test_folder_write_problem(tmp_path):
    assert preflight_inputs.folder_write_problem(tmp_path / "new" / "deeper") is None  # nothing created
    assert not (tmp_path / "new").exists()
    (tmp_path / "f").write_text("x")
    assert preflight_inputs.folder_write_problem(tmp_path / "f" / "sub") == (
        f"cannot create {tmp_path / 'f' / 'sub'}: {tmp_path / 'f'} is a file, not a folder")


# ----- security defaults and model names outside the CLI ---------------------------------------
def test_no_remote_code_runs_unless_the_config_asks(monkeypatch):
    import transformers

    from lapo_lightning.models import shape as model_shape
    from lapo_lightning.evaluation.models import ModelSpec, check_models
    from lapo_lightning.models.source import resolve
    from lapo_lightning.policy import PolicyConfig, load_tokenizer

    resolve("tiny:llama")  # built (if needed) before from_pretrained is replaced
    seen = []

    def recorder(kind):
        def from_pretrained(name, *args, **kwargs):
            seen.append((kind, kwargs.get("trust_remote_code", False)))  # transformers' own default is False
            raise RuntimeError("recorded")
        return from_pretrained

    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM, transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", recorder(cls.__name__))

    def every_loader(**settings) -> list[tuple[str, bool]]:
        seen.clear()
        for load in (lambda: load_tokenizer(PolicyConfig(**settings)),
                     lambda: REAL_LOAD_BASE_MODEL(PolicyConfig(**settings)),
                     lambda: model_shape.read_shape("tiny:llama", **settings),
                     lambda: preflight_inputs.check_model_fit(preflight.Built({"model.policy": PolicyConfig(**settings)}))):
            try:
                load()
            except RuntimeError:
                pass
        check_models([ModelSpec("m", "tiny:llama", **settings)])  # reports the error as a message
        return list(seen)

    assert every_loader() == [("AutoTokenizer", False), ("AutoModelForCausalLM", False), ("AutoConfig", False),
                              ("AutoConfig", False), ("AutoConfig", False)]
    assert PolicyConfig().trust_remote_code is False and ModelSpec("m", "x").trust_remote_code is False
    assert all(trusted for _, trusted in every_loader(trust_remote_code=True))  # the opt-in reaches every load


def test_resolve_names_a_missing_local_folder_outside_the_cli(tmp_path):
    from lapo_lightning.models.source import ModelNotFound, looks_like_path, resolve

    with pytest.raises(ModelNotFound) as err:
        resolve(str(tmp_path / "missing"), key="model.models[0].model")
    assert str(err.value) == (f"model.models[0].model: folder {tmp_path / 'missing'} does not exist (found nothing "
                              "there; a local model is a folder with config.json, e.g. from save_pretrained)")
    assert resolve(str(tmp_path)) == str(tmp_path)  # an existing folder passes through
    assert [looks_like_path(n) for n in ("./m", "../m", "/m", "~/m", "runs/a/adapter", "org/name", "gpt2",
                                         "tiny:llama")] == [True, True, True, True, True, False, False, False]


def test_data_settings_are_one_line_each(tmp_path, capsys):
    config = grpo(tmp_path, **{"problems_per_step: 4": "problems_per_step: 0",
                               "val_fraction: 0.25": "val_fraction: 1.5"})
    assert refused(capsys, config) == ["data.problems_per_step must be >= 1, got 0",
                                       "data.val_fraction must be in [0, 1), got 1.5"]


def test_other_modules_are_checked_through_their_base_class_arguments(tmp_path, capsys):
    from lapo_lightning.problem_sets.files import ProblemFields
    from lapo_lightning.sft import SFTDataModule

    assert preflight_settings._init_hints(SFTDataModule)["fields"] is ProblemFields  # through **kwargs to LapoDataModule
    config = config_in(tmp_path, "demo/sft.yaml")
    assert refused(capsys, config, "--data.completion_field", "nope", "--data.max_problems", "8") == [
        "data.completion_field: 8 problems of data.train_file have no text field 'nope', e.g. id 'sft-00000'"]
