"""One GRPO step of one system, in its own process: the workers ``trl_compare.py`` runs side by side.

Where it sits: ``trl_compare.run_one`` starts ``python benchmarks/step_workers.py SYSTEM CFG_JSON``
for each (system, workload), so peak memory is per system and nothing is warm across runs;
the worker prints one ``RESULT {json}`` line. Systems: ``lapo`` (``GRPOModule`` through
Lightning, as ``lapo fit`` trains), its ablations ``lapo_padded`` (no shared prompt prefix) and
``lapo_grouped`` (groups kept together in micro-batches), ``trl`` (TRL's ``GRPOTrainer``) and
``floor`` (the bare generate + forward/backward any GRPO step must do).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the work tree's lapo_lightning
sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import install_uniform_stop, workload_spec, problems, prompt_template, render, correct  # noqa: E402


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
    import lapo_lightning.rollout_logprobs
    from lapo_lightning.shared_prefix import grouped_order

    def grouped_only(lengths, prompt_lengths, group_index, size, completion_weight=1.0):
        order = grouped_order(lengths, group_index)
        return [order[i: i + size] for i in range(0, len(order), size)]

    planned = lapo_lightning.rollout_logprobs.plan_micro_batches
    lapo_lightning.rollout_logprobs.plan_micro_batches = grouped_only
    try:
        return run_lapo(cfg)
    finally:  # a worker runs in its own process, but a test may call this in its own
        lapo_lightning.rollout_logprobs.plan_micro_batches = planned


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


if __name__ == "__main__":
    worker(sys.argv[1], json.loads(sys.argv[2]))
