"""Reference models for the KL penalty, injected into the GRPO module from YAML.

Flow: ``GRPOModule`` calls ``reference.setup(policy)`` once after loading the policy, then
computes reference log-probs inside ``with reference.active(policy):`` (no grad). None of
the variants holds a second copy of the base weights:

- :class:`NoReference`: no KL term and no reference forward at all (``kl_coef`` must be 0).
- :class:`AdapterDisabled`: the base with the LoRA adapter switched off (stage 1 default).
- :class:`FrozenAdapter`: a saved adapter (e.g. stage 1's) loaded a second time, frozen,
  under its own adapter name (the paper's stage-2 reference).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from lapo_lightning.policy import ADAPTER_NAME, is_adapter_dir


class Reference:
    """Base class: how to switch the policy into its reference weights."""

    needs_forward: bool = True

    def check_paths(self) -> None:
        """Fail at start-up, before any weights load, on files this reference needs."""

    def setup(self, policy) -> None:
        """Called once after the policy is loaded (e.g. to load extra weights)."""

    @contextmanager
    def active(self, policy) -> Iterator[None]:
        raise NotImplementedError
        yield  # pragma: no cover


class NoReference(Reference):
    """No reference model: the KL coefficient must be 0."""

    needs_forward = False

    @contextmanager
    def active(self, policy) -> Iterator[None]:
        raise RuntimeError("NoReference has no weights to evaluate; set model.grpo.kl_coef: 0")
        yield  # pragma: no cover


class AdapterDisabled(Reference):
    """The base model with the LoRA adapter disabled."""

    @contextmanager
    def active(self, policy) -> Iterator[None]:
        with policy.disable_adapter():
            yield


class FrozenAdapter(Reference):
    """A saved PEFT adapter, loaded beside the trainable one and never trained.

    Args:
        adapter: folder of the saved adapter (``adapter_config.json`` + weights).
    """

    name = "reference"

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter

    def check_paths(self) -> None:
        if not is_adapter_dir(self.adapter):
            raise FileNotFoundError(
                f"model.reference.init_args.adapter: no PEFT adapter at {self.adapter!r} "
                "(expected adapter_config.json there; run stage 1 first?)"
            )

    def setup(self, policy) -> None:
        self.check_paths()
        if self.name not in policy.peft_config:
            policy.load_adapter(self.adapter, adapter_name=self.name, is_trainable=False)
        policy.set_adapter(ADAPTER_NAME)  # keep training the policy's own adapter

    @contextmanager
    def active(self, policy) -> Iterator[None]:
        # inference_mode=True keeps every adapter frozen while the reference is active;
        # switching back re-enables gradients on the policy adapter only.
        policy.set_adapter(self.name, inference_mode=True)
        try:
            yield
        finally:
            policy.set_adapter(ADAPTER_NAME)
