"""The model summary ``lapo fit`` prints at the start of fit, in place of Lightning's own.

Lightning's table has a FLOPs column and a "Total FLOPs: 0" line that are always 0 here: it
counts FLOPs only on a module's ``example_input_array``, and a generative policy has none.
``LapoCLI.before_fit`` swaps Lightning's summary callback for this one, which prints the same
parameter counts in one line; ``trainer.enable_model_summary: false`` still turns it off.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count


class ParameterSummary(ModelSummary):
    """One line: each top-level module with its type and parameters, then trainable / total.

    Example: ``model: policy (PeftModelForCausalLM, 124 K); 16.4 K of 124 K parameters trainable (0.496 MB)``.
    """

    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict[str, int], total_flops: int, **summarize_kwargs) -> None:
        columns = dict(summary_data)
        modules = ", ".join(f"{name} ({kind}, {params})"
                            for name, kind, params in zip(columns["Name"], columns["Type"], columns["Params"]))
        rank_zero_info(f"model: {modules}; {get_human_readable_count(trainable_parameters)} of "
                       f"{get_human_readable_count(total_parameters)} parameters trainable "
                       f"({get_formatted_model_size(model_size)} MB)")
