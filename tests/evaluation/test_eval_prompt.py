"""Which prompt ``lapo eval`` uses: the one the adapters recorded at export, for every model.

Covers ``evaluation.models.evaluation_prompt`` on adapter folders holding only their
``lapo_prompt.json`` (the rule reads nothing else), and ``EvalModule`` wiring it in.
Run: python -m pytest tests/evaluation/test_eval_prompt.py -q
"""

import pytest

from lapo_lightning.evaluation.models import ModelSpec, evaluation_prompt
from lapo_lightning.evaluation.module import EvalModule
from lapo_lightning.prompts import ChatPrompt, PlainPrompt, prompt_record, save_prompt


def adapter(tmp_path, name, prompt):
    folder = tmp_path / name
    folder.mkdir()
    if prompt is not None:
        save_prompt(prompt, folder)
    return str(folder)


def test_base_and_adapters_use_the_prompt_the_adapters_recorded(tmp_path):
    chat = ChatPrompt(think=False)
    models = [ModelSpec(name="base", model="tiny:llama"),
              ModelSpec(name="s1", model="tiny:llama", adapter=adapter(tmp_path, "s1", chat)),
              ModelSpec(name="s2", model="tiny:llama", adapter=adapter(tmp_path, "s2", chat))]
    prompt, problems = evaluation_prompt(models, None)
    assert problems == [] and prompt_record(prompt) == prompt_record(chat)
    assert prompt_record(EvalModule(models).prompt) == prompt_record(chat)


def test_no_record_means_the_papers_plain_prompt(tmp_path):
    models = [ModelSpec(name="base", model="tiny:llama"),
              ModelSpec(name="old", model="tiny:llama", adapter=adapter(tmp_path, "old", None))]
    prompt, problems = evaluation_prompt(models, None)
    assert problems == [] and isinstance(prompt, PlainPrompt)


def test_adapters_trained_with_different_prompts_must_choose(tmp_path):
    models = [ModelSpec(name="chat", model="tiny:llama", adapter=adapter(tmp_path, "a", ChatPrompt())),
              ModelSpec(name="plain", model="tiny:llama", adapter=adapter(tmp_path, "b", PlainPrompt()))]
    _, problems = evaluation_prompt(models, None)
    assert problems == ["model.prompt: the adapters were trained with different prompts "
                        "(chat: ChatPrompt, plain: PlainPrompt); set model.prompt to the one to compare them with"]
    assert EvalModule(models).check()[-1] == problems[0]


def test_an_explicit_prompt_wins_and_names_the_adapter_it_overrides(tmp_path):
    models = [ModelSpec(name="chat", model="tiny:llama", adapter=adapter(tmp_path, "a", ChatPrompt()))]
    with pytest.warns(UserWarning, match="recorded at export by chat"):
        prompt, problems = evaluation_prompt(models, PlainPrompt())
    assert problems == [] and isinstance(prompt, PlainPrompt)


def test_an_unreadable_record_is_named(tmp_path):
    folder = adapter(tmp_path, "broken", None)
    (tmp_path / "broken" / "lapo_prompt.json").write_text('{"class_path": "os.system", "init_args": {}}')
    _, problems = evaluation_prompt([ModelSpec(name="x", model="tiny:llama", adapter=folder)], None)
    assert problems[0].startswith("model.models[0] (x).adapter: cannot read its recorded prompt:")
