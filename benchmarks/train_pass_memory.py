"""Peak memory and time of ONE training pass (forward, GRPO loss, backward) at a real vocabulary.

Model: a random-init Qwen2 of DeepSeek-R1-Distill-Qwen-1.5B's shape (V 151,936, h 1,536, 12
heads, 2 KV heads, head_dim 128, MLP 8,960; its head tied here, which costs the same) with only
``--layers`` layers, loaded by ``load_policy`` (LoRA r 16 on every linear but the head,
``--checkpointing`` as asked), fp32 on CPU. Inputs:
``--rows`` rows of a 150-token prompt + a T-token completion, no padding (every completion at
the cap, the estimate's worst case); temperature 1; ``grpo_loss`` with a fixed reference (kl
0.04) and random advantages. Variants, each (variant, T, repeat) in a fresh forked process,
interleaved (a peak is per pass; load changes on the machine hit every variant alike):

- ``chunked``: ``GRPOModule.completion_logprobs``, padded forward (``shared_prefix`` off): the
  decoder with its MLPs tiled over positions (``tiled_mlp.py``, as ``lapo fit`` trains), then
  ``head_logprobs`` through the head ``--chunk`` positions at a time.
- ``today``: the full-logits path the training forward used before the chunked head (6ca5fd1):
  ``model(..., logits_to_keep=t+1).logits[:, :-1]``, ``token_logprobs`` (``[rows, T, V]`` logits).
- ``trl``: the installed TRL's own ``GRPOTrainer._get_per_token_logps_and_entropies`` (stub
  ``self``) on the model patched by TRL's ``add_fused_lm_head`` as ``GRPOTrainer.__init__`` does.
- ``trl_logits``: full logits through TRL's ``selective_log_softmax`` (TRL's older GRPO path).
- ``plain``: ``model(..., logits_to_keep=t+1).logits.mean()`` + backward: the time floor.
- ``decoder``: the decoder alone (completion hidden states ``.mean()`` + backward): a free head.

Each process loads the model, runs a warm-up pass at T 8, then the measured grad pass and a
no-grad pass (the reference pass's shape). Memory is RSS growth over the RSS just before the
pass (after ``gc`` and ``malloc_trim``); the peak is ``VmHWM``, reset by ``/proc/self/clear_refs``
before the pass. "fwd peak": the peak when the loss exists, before backward (in brackets: when
the decoder's forward returns). "act": RSS growth when the decoder returns (kept activations,
its output, allocator slack) and "saved": bytes of the distinct non-parameter tensors autograd
saved in the decoder's forward (a ``saved_tensors_hooks`` pack hook, as tests/test_cost.py
calibrates; with checkpointing it sees only what is saved outside the checkpointed layers).
"peak - act": everything else (the head's logits or chunks, backward's temporaries); "peak -
decoder": above the ``decoder`` variant's peak, the head's marginal cost. Estimates
(``lapo_lightning.safety.cost``, fp32, padded, checkpointing as run): ``training_activation_bytes``
against act and saved, ``head_bytes`` against chunked's peak - act, and the old
``(rows * 12 + 32) * T * V`` logits formula against today's. Times: wall seconds and, in
brackets, the process's CPU seconds (less moved by other load on a shared machine).

    python benchmarks/train_pass_memory.py --repeats 3            # 2 layers, T 1024 and 2048, 2 rows
    python benchmarks/train_pass_memory.py --checkpointing        # as the GPU configs train
    python benchmarks/train_pass_memory.py --tokens 2048 --rows 1 --variants chunked,today
    python benchmarks/train_pass_memory.py --smoke                # tiny sizes, seconds (for a test)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
GB = 1e9
VARIANTS = ("chunked", "today", "trl", "trl_logits", "plain", "decoder")
PROMPT_TOKENS = 150
KL_COEF = 0.04
KEYS = ("s", "cpu_s", "peak_gb", "act_gb", "saved_gb", "fwd_peak_gb", "decoder_peak_gb")


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:  # VmHWM; writing "5" to /proc/self/clear_refs resets it to the current RSS
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


def build_model(folder: Path, args: dict) -> str:
    """A Qwen2 of the R1-Distill-1.5B shape (heads of 128 where h allows) with the char tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lapo_lightning.models.tiny import save_tiny

    hidden, vocab = args["hidden"], args["vocab"]
    save_tiny(folder, "qwen2", 64, 1, vocab_size=vocab, tied=True)  # for its tokenizer; the model is replaced
    head_dim = 128 if hidden % 128 == 0 and hidden >= 512 else hidden // 4
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 35 // 6, num_hidden_layers=args["layers"],
        num_attention_heads=hidden // head_dim, num_key_value_heads=2, head_dim=head_dim,
        max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
        pad_token_id=None)).save_pretrained(folder)
    return str(folder)


def worker(cfg: dict) -> dict:
    """One variant at one T in this process: warm-up, then the measured grad and no-grad passes."""
    import contextlib
    import ctypes
    import gc
    import types

    import torch

    from lapo_lightning import GenerationConfig, GRPOConfig, GRPOModule
    from lapo_lightning.algo import grpo_loss, token_logprobs
    from lapo_lightning.model_parts import decoder_and_head
    from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy
    from lapo_lightning.reference import AdapterDisabled
    from lapo_lightning.types import ProblemBatch, RolloutBatch

    variant, rows = cfg["variant"], cfg["rows"]
    torch.manual_seed(0)  # the same adapter in every process
    model, _ = load_policy(PolicyConfig(model=cfg["model"], lora=LoraSettings(r=16),
                                        gradient_checkpointing=cfg["checkpointing"]))
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: gradient flows through every LoRA branch
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    module = GRPOModule(grpo=GRPOConfig(group_size=2, micro_batch_size=rows, shared_prefix=False, kl_coef=KL_COEF,
                                        logprob_chunk_tokens=cfg["chunk"]),
                        generation=GenerationConfig(max_new_tokens=cfg["tokens"]), reference=AdapterDisabled())
    module.policy = model
    if variant == "chunked":  # as GRPOModule.configure_model leaves the policy: MLPs tiled in training
        from lapo_lightning.tiled_mlp import tile_mlps

        tile_mlps(model, module.grpo.mlp_chunk_tokens)
    temperature, vocab = module.generation.temperature, model.config.vocab_size
    decoder, _ = decoder_and_head(model)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    marks: dict = {"saved": {}}

    def pack(x):  # distinct non-parameter storages autograd keeps from the decoder's forward
        if (storage := x.untyped_storage()).data_ptr() not in params:
            marks["saved"][storage.data_ptr()] = storage.nbytes()
        return x

    saving = torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x)

    def decoder_done(*_) -> None:
        saving.__exit__(None, None, None)
        marks.setdefault("decoder_end", rss_bytes())
        marks.setdefault("decoder_peak", peak_bytes())

    decoder.register_forward_pre_hook(lambda *_: saving.__enter__())
    decoder.register_forward_hook(decoder_done)
    if variant == "trl":
        from trl import GRPOTrainer
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model.get_base_model(), temperature=temperature, outputs=("log_probs", "entropy"))
        trl_self = types.SimpleNamespace(accelerator=types.SimpleNamespace(autocast=contextlib.nullcontext,
                                                                           is_main_process=True))

    def inputs(t: int):
        gen = torch.Generator().manual_seed(t)
        prompt, completion = torch.randint(vocab, (rows, PROMPT_TOKENS), generator=gen), torch.randint(
            vocab, (rows, t), generator=gen)
        ones = torch.ones(rows, PROMPT_TOKENS + t, dtype=torch.bool)
        batch = RolloutBatch(problems=ProblemBatch(["p"], ["p"], ["1"]),
                             group_index=torch.zeros(rows, dtype=torch.long), prompt_ids=prompt,
                             prompt_mask=ones[:, :PROMPT_TOKENS], completion_ids=completion,
                             completion_mask=ones[:, PROMPT_TOKENS:], texts=[""] * rows,
                             truncated=torch.ones(rows, dtype=torch.bool))
        ref = -5 * torch.rand(rows, t, generator=gen) - 9  # about a random model's log(1 / V)
        return batch, ref, torch.randn(rows, generator=gen)

    def logprobs(batch: RolloutBatch, t: int):
        ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
        mask = torch.cat([batch.prompt_mask, batch.completion_mask], 1).long()
        if variant == "chunked":
            return module.completion_logprobs(batch, torch.arange(rows))
        if variant == "trl":
            return GRPOTrainer._get_per_token_logps_and_entropies(trl_self, model, ids, mask, t,
                                                                  compute_entropy=True)[0]
        kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                      use_cache=False)
        if variant == "decoder":
            return decoder(**kwargs).last_hidden_state[:, PROMPT_TOKENS - 1:-1]
        logits = model(**kwargs, logits_to_keep=t + 1).logits
        if variant == "plain":
            return logits
        if variant == "trl_logits":
            from trl.trainer.utils import selective_log_softmax

            return selective_log_softmax(logits[:, :-1], batch.completion_ids, temperature)
        return token_logprobs(logits[:, :-1], batch.completion_ids, temperature)

    def grad_pass(batch, ref, adv, t):
        lp, mask = logprobs(batch, t), batch.completion_mask
        loss = lp.float().mean() if variant in ("plain", "decoder") else grpo_loss(
            lp, None, ref, adv, mask, kl_coef=KL_COEF, total_tokens=float(mask.sum()), total_sequences=float(rows),
            max_tokens=t).loss
        marks["fwd_peak"] = peak_bytes()  # the forward's peak, before backward starts
        loss.backward()
        return float(loss.detach())

    def no_grad_pass(batch, ref, adv, t):
        with torch.no_grad():
            return float(logprobs(batch, t).float().sum()) / 1e6

    def measured(fn) -> dict:
        marks.clear()
        marks["saved"] = {}
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS: the baseline is live memory
        before = rss_bytes()
        Path("/proc/self/clear_refs").write_text("5")
        start, cpu = time.perf_counter(), time.process_time()
        value = fn()
        out = {"s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "value": value,
               "peak_gb": (peak_bytes() - before) / GB, "saved_gb": sum(marks["saved"].values()) / GB}
        for key, mark in (("act_gb", "decoder_end"), ("fwd_peak_gb", "fwd_peak"), ("decoder_peak_gb", "decoder_peak")):
            out[key] = (marks.get(mark, before) - before) / GB
        return out

    small, data, t = inputs(8), inputs(cfg["tokens"]), cfg["tokens"]
    grad_pass(*small, 8)
    no_grad_pass(*small, 8)
    model.zero_grad(set_to_none=False)
    return {"grad": measured(lambda: grad_pass(*data, t)), "no_grad": measured(lambda: no_grad_pass(*data, t))}


def estimates(folder: str, rows: int, t: int, chunk: int, checkpointing: bool = False) -> dict:
    from lapo_lightning.models import shape as model_shape
    from lapo_lightning.safety import cost

    shape = model_shape.read_shape(folder)
    act = cost.training_activation_bytes(shape, rows, PROMPT_TOKENS, t, rows, 4, 16,
                                         cost.adapted_per_layer(shape, "all-linear"), checkpointing)
    return {"act": act / GB, "chunked": cost.head_bytes(rows, t, shape, 4, chunk) / GB,
            "today": (rows * 12 + 32) * t * shape.vocab / GB}  # the old LOGIT_ENTRY/ROW_BYTES formula, fp32


def in_child(fn, *args):
    """``fn(*args)`` in a forked child (a fresh address space for its peak, without re-importing
    torch: the parent only imports, so no OpenMP pool exists to fork); an error dict if it fails."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(fn(*args))
        except BaseException as err:  # noqa: BLE001 - reported in the table, the other cells still run
            send.send({"error": f"{type(err).__name__}: {err}"[:300]})

    proc = ctx.Process(target=child)
    proc.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:  # killed (e.g. out of memory) before it could answer
        result = {"error": "worker died"}
    proc.join()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048], help="completion lengths T")
    parser.add_argument("--rows", type=int, default=2, help="rows per micro-batch")
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--chunk", type=int, default=512, help="model.grpo.logprob_chunk_tokens")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per (variant, T), interleaved")
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing on, as every shipped GPU config runs")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.layers, args.tokens, args.rows, args.vocab, args.hidden, args.chunk = 1, [32], 2, 4096, 64, 16
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    started = time.perf_counter()
    git = [subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True).stdout.strip()
           for cmd in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "--", "lapo_lightning"])]
    commit = (git[0] or "?") + (" with uncommitted lapo_lightning changes" if git[1] else "")
    for name in ("torch", "transformers", "peft", "trl", "lapo_lightning.module", "lapo_lightning.safety.cost"):
        __import__(name)  # once, before any torch op: every forked worker starts with them (and this code) loaded
    with tempfile.TemporaryDirectory(prefix="lapo_tpm_") as tmp:
        folder = in_child(build_model, Path(tmp) / "model", vars(args))
        if isinstance(folder, dict):
            raise SystemExit(f"building the model failed: {folder['error']}")
        raw: dict = {(v, t): [] for t in args.tokens for v in variants}
        for _ in range(args.repeats):
            for t in args.tokens:
                for v in variants:
                    cfg = {"variant": v, "tokens": t, "rows": args.rows, "chunk": args.chunk, "model": folder,
                           "checkpointing": args.checkpointing}
                    raw[(v, t)].append(in_child(worker, cfg))
                    print(f"  done {v} T={t}: {raw[(v, t)][-1]}", file=sys.stderr, flush=True)
        est = {t: estimates(folder, args.rows, t, args.chunk, args.checkpointing) for t in args.tokens}
    print(f"lapo_lightning {commit}; Qwen2 h {args.hidden}, {args.layers} layers, V {args.vocab}, tied; LoRA r 16 "
          f"all-linear; fp32 CPU ({os.cpu_count()} cores); {args.rows} rows x ({PROMPT_TOKENS} prompt + T) tokens, "
          f"padded, checkpointing {'on' if args.checkpointing else 'off'}; chunk {args.chunk}; medians of "
          f"{args.repeats} fresh process(es) per cell. GB = 1e9 bytes of RSS growth over the pass's start; "
          f"(est) = lapo_lightning.safety.cost; s = wall seconds (CPU seconds).")
    print("| variant | T | grad peak GB | fwd peak GB (at decoder end) | act GB: RSS, saved (est) "
          "| peak - act GB (est) | peak - decoder GB | est act+head GB | grad s (cpu) | no-grad s (cpu) "
          "| no-grad peak GB | loss |")
    print("|" + "---|" * 12)
    table = {}
    for t in args.tokens:
        decoder = [r["grad"]["peak_gb"] for r in raw.get(("decoder", t), []) if "error" not in r]
        for v in variants:
            ok = [r for r in raw[(v, t)] if "error" not in r]
            if not ok:
                print(f"| {v} | {t} | failed: {raw[(v, t)][0]['error']} |" + " |" * 9)
                continue
            row = table[f"{v}@{t}"] = {f"{phase}_{key}": statistics.median(r[phase][key] for r in ok)
                                       for phase in ("grad", "no_grad") for key in KEYS}
            peak, act, head = row["grad_peak_gb"], row["grad_act_gb"], est[t].get(v)
            row.update(act_est_gb=est[t]["act"], head_est_gb=head, loss=ok[0]["grad"]["value"], runs=ok,
                       minus_decoder_gb=peak - statistics.median(decoder) if decoder else None)
            text = {"head": "-" if head is None else f"{head:.2f}",
                    "total": "-" if head is None else f"{est[t]['act'] + head:.2f}",
                    "minus": "-" if not decoder else f"{row['minus_decoder_gb']:.2f}"}
            print(f"| {v} | {t} | {peak:.2f} | {row['grad_fwd_peak_gb']:.2f} ({row['grad_decoder_peak_gb']:.2f}) | "
                  f"{act:.2f}, {row['grad_saved_gb']:.2f} ({est[t]['act']:.2f}) | {peak - act:.2f} ({text['head']}) | "
                  f"{text['minus']} | {text['total']} | {row['grad_s']:.1f} ({row['grad_cpu_s']:.0f}) | "
                  f"{row['no_grad_s']:.1f} ({row['no_grad_cpu_s']:.0f}) | {row['no_grad_peak_gb']:.2f} | "
                  f"{row['loss']:.6g} |")
    for t in args.tokens:
        chunked, today, plain = (table.get(f"{v}@{t}") for v in ("chunked", "today", "plain"))
        if chunked and today:
            head = [r["grad_peak_gb"] - r["grad_act_gb"] for r in (today, chunked)]
            print(f"T {t}: today / chunked: grad peak {today['grad_peak_gb'] / chunked['grad_peak_gb']:.1f}x, "
                  f"peak - act {head[0] / head[1]:.1f}x")
        if chunked and plain:
            ratio = {k: chunked[k] / plain[k] for k in ("grad_s", "grad_cpu_s", "no_grad_s", "no_grad_cpu_s")}
            print(f"T {t}: chunked / plain time: grad {ratio['grad_s']:.2f}x wall, {ratio['grad_cpu_s']:.2f}x cpu; "
                  f"no-grad {ratio['no_grad_s']:.2f}x wall, {ratio['no_grad_cpu_s']:.2f}x cpu")
    wall = time.perf_counter() - started
    print(f"wall {wall:.0f} s")
    result = {"commit": commit, "args": vars(args), "estimates_gb": est, "table": table, "wall_s": wall}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
