"""Measure the peak of live memory over two Trainer-like training steps with PyTorch's MemTracker (CPU).

Writes fixtures/memory/measured_peak.json (see fixtures/memory/README.md, "Peak of the step").
Usage: see README.md beside this file.
"""
import argparse
import gc
import json
import os
import random
import sys
import time
import warnings
from copy import deepcopy

import numpy as np
import torch
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "measure-memory"))
import measure  # noqa: E402  (tools/measure-memory/measure.py: model builders, peft regimes)
import transformers  # noqa: E402

# Shapes added for the peak grid (the vocabulary is 32x the hidden size, as in Llama-3-8B, so the
# loss's fp32 logits weigh as they do at scale); the others come from measure.MODELS.
measure.MODELS.update({
    "llama-h64-l2-v2048": ("llama", dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=2048,
                                         max_position_embeddings=256, tie_word_embeddings=False)),
    "gpt2-e64-l2-v2048": ("gpt2", dict(n_embd=64, n_layer=2, n_head=4, n_inner=256, vocab_size=2048,
                                       n_positions=256)),
})

CATEGORIES = {_MemRefType.PARAM: "parameters", _MemRefType.BUFFER: "buffers", _MemRefType.GRAD: "gradients",
              _MemRefType.ACT: "activations", _MemRefType.TEMP: "temporaries", _MemRefType.OPT: "optimizer",
              _MemRefType.OTH: "other"}
PHASES = ["forward", "loss", "backward", "optimizer", "zero_grad"]


class PhasedTracker(MemTracker):
    """MemTracker that also remembers, per step and phase, the peak and its breakdown."""

    def __init__(self):
        super().__init__()
        self.step = 0
        self.phase = "forward"
        self.peaks = {}  # (step, phase) -> (total, by category)

    def _update_peak_stats(self, peak_state):
        super()._update_peak_stats(peak_state)
        self.sample()

    def sample(self):
        for dev, snap in self._curr_mem_snap.items():
            total = snap["Total"]
            key = (self.step, self.phase)
            if total > self.peaks.get(key, (-1, None))[0]:
                self.peaks[key] = (total, {CATEGORIES[k]: v for k, v in snap.items() if k in CATEGORIES})

    def current(self):
        return sum(s["Total"] for s in self._curr_mem_snap.values())


def skip_frozen_hooks():
    """MemTracker registers grad hooks on every parameter; PyTorch refuses them on tensors that do
    not require grad (LoRA's frozen base). Returns the originals to restore."""
    orig = (torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook)

    class NoHandle:
        def remove(self):
            pass

    def register_hook(t, hook):
        return orig[0](t, hook) if t.requires_grad else NoHandle()

    def register_post(t, hook):
        return orig[1](t, hook) if t.requires_grad else NoHandle()

    torch.Tensor.register_hook = register_hook
    torch.Tensor.register_post_accumulate_grad_hook = register_post
    return orig


def restore_hooks(orig):
    torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook = orig


def build_model(name, regime, dtype_mode, attn, checkpointing):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    family, cfg, model = measure.build(name, attn)
    if dtype_mode == "bf16-base":
        # `from_pretrained(..., dtype=torch.bfloat16)`: every weight in bf16; peft then creates
        # fp32 adapters (autocast_adapter_dtype=True).
        model = model.to(torch.bfloat16)
    if checkpointing:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable()
    model, lora = measure.apply_regime(model, regime)
    return family, cfg, model, lora


def run_step(tracker, step, forward_loss, optimizers, autocast, step_optimizers=True):
    """One Trainer-like step: `forward_loss(tracker)` under bf16 autocast (when `autocast`) returns
    the loss with the model output already dropped; backward, each optimizer's step (unless
    `step_optimizers` is false: the optimizer runs inside the backward) and
    `zero_grad(set_to_none=True)`, each phase named for the tracker."""
    tracker.step = step
    tracker.phase = "forward"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = forward_loss(tracker)
    tracker.phase = "backward"
    loss.backward()
    del loss
    tracker.phase = "optimizer"
    if step_optimizers:
        for opt in optimizers:
            opt.step()
    tracker.phase = "zero_grad"
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    tracker.sample()


def model_loss(model, ids):
    """transformers' loss inside the forward (`labels=ids`), the output dropped."""
    def forward_loss(tracker):
        out = model(input_ids=ids, labels=ids)
        loss = out.loss
        del out
        return loss
    return forward_loss


def loss_phase_hook(lm_head, current):
    """The loss phase starts when lm_head returns (the logits, the loss's fp32 copy and
    log-softmax) and ends when the forward returns: a forward hook naming it for the tracker in
    `current["tracker"]`. Returns the hook's handle."""
    return lm_head.register_forward_hook(lambda m, i, o: setattr(current["tracker"], "phase", "loss"))


def tracked_steps(external, one_step, steps=(1, 2)):
    """Run `one_step(tracker, step)` for each step, each under a fresh PhasedTracker told of
    `external` (the model, optimizers and ids: their parameters, gradients and optimizer state as
    they stand when the step starts), with `skip_frozen_hooks` on. Returns the peaks by (step,
    phase) and each step's end bytes.

    One tracker per step: MemTracker's ModTracker hooks keep tensors alive across steps under
    reentrant checkpointing (a hook on each recomputed block's detached input, held through C++,
    which Python's gc cannot free): `torch.profiler`'s allocator events show the live bytes
    growing by one hidden state pair per checkpointed block and step under the tracker, and flat
    without it. A tracker that spans both steps books that leak in the second step's categories;
    a fresh one books only what the step itself holds.

    Each step starts from `gc.collect()`: peft's DoRA leaves reference cycles holding tensors,
    which Python's collector frees when its allocation counters say, so without it a step's peak
    depends on what the process ran before (DoRA steps moved by up to 3% from run to run)."""
    peaks, boundaries = {}, {}
    orig = skip_frozen_hooks()
    try:
        for step in steps:
            gc.collect()
            tracker = PhasedTracker()
            with tracker:
                tracker.track_external(*external)
                one_step(tracker, step)
                boundaries[step] = tracker.current()
            peaks.update({k: v for k, v in tracker.peaks.items() if k[0] == step})
    finally:
        restore_hooks(orig)
    return peaks, boundaries


def step_records(peaks, boundaries, steps=(1, 2)):
    """Each step's record: its peak over the phases, that phase's categories, every phase's peak
    and the bytes at its end."""
    out = {}
    for step in steps:
        phases = {p: {"bytes": peaks[(step, p)][0], "by_category": peaks[(step, p)][1]}
                  for p in PHASES if (step, p) in peaks}
        phase = max(phases, key=lambda p: phases[p]["bytes"])
        out[f"step{step}"] = {"peak_bytes": phases[phase]["bytes"], "phase": phase,
                              "by_category": phases[phase]["by_category"], "phases": phases,
                              "end_bytes": boundaries[step]}
    return out


def quant_state_tensors(params):
    """The tensors bitsandbytes keeps beside each 4-bit weight (`Params4bit.quant_state`: absmax,
    codebook, and under double quantization the nested absmax, codebook and offset), one per
    storage. They are neither parameters nor buffers, so MemTracker does not see them unless told;
    an ordinary parameter has none."""
    found = {}
    for p in params:
        qs = getattr(p, "quant_state", None)
        while qs is not None:
            for t in (qs.absmax, qs.code, getattr(qs, "offset", None)):
                if isinstance(t, torch.Tensor):
                    found[t.untyped_storage().data_ptr()] = t
            qs = getattr(qs, "state2", None)
    return list(found.values())


def measure_peak(name, regime, batch, seq, dtype_mode, attn, checkpointing, build=build_model):
    """One record: two steps of the model `build(name, regime, dtype_mode, attn, checkpointing)`
    returns (`build_model` by default)."""
    family, cfg, model, lora = build(name, regime, dtype_mode, attn, checkpointing)
    params = list(model.parameters())
    quant_states = quant_state_tensors(params)
    trainable = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3, foreach=True)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    lm_head = model.get_output_embeddings()
    current = {}
    handle = loss_phase_hook(lm_head, current)

    def one_step(tracker, step):
        current["tracker"] = tracker
        for t in quant_states:
            # Booked as parameters: they are the 4-bit weights' storage.
            tracker._update_and_maybe_create_winfos(t, _MemRefType.PARAM)
        run_step(tracker, step, model_loss(model, ids), [opt], dtype_mode != "fp32")

    try:
        peaks, boundaries = tracked_steps((model, opt, ids), one_step)
    finally:
        handle.remove()
    steps = step_records(peaks, boundaries)
    uniq = {p.untyped_storage().data_ptr(): p for p in params}
    state = sum(v.nbytes for st in opt.state.values() for k, v in st.items() if k != "step")
    params_record = {"trainable_count": sum(p.numel() for p in trainable),
                     "trainable_bytes": sum(p.nbytes for p in trainable),
                     "frozen_bytes": sum(p.nbytes for p in uniq.values() if not p.requires_grad),
                     "total_bytes": sum(p.nbytes for p in uniq.values())}
    if quant_states:
        # total_bytes then counts the quantized weights whole: packed data and quant states.
        params_record["quant_state_bytes"] = sum(t.untyped_storage().nbytes() for t in quant_states)
        params_record["total_bytes"] += params_record["quant_state_bytes"]
    record = {
        "id": f"{name}|{regime}|b{batch}s{seq}|{dtype_mode}|{attn}" + ("|ckpt" if checkpointing else ""),
        "model": name,
        "shape": measure_shape(name, family, cfg),
        "regime": regime, "lora": lora, "dtype_mode": dtype_mode,
        "attn_implementation_requested": attn,
        "attn_implementation_used": model.config._attn_implementation,
        "batch": batch, "seq": seq,
        "gradient_checkpointing": bool(checkpointing),
        "optimizer": {"class": "torch.optim.AdamW", "foreach": True, "state_bytes_excl_step": state,
                      "step_bytes": sum(st["step"].nbytes for st in opt.state.values())},
        "params": params_record,
        "peak": steps,
    }
    return record


def measure_shape(name, family, cfg):
    return {
        "family": family, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        "intermediate_size": (getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
                              or 4 * cfg.hidden_size),
        "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": bool(cfg.tie_word_embeddings), "config_kwargs": measure.MODELS[name][1],
    }



# The command line's records in the fixtures' order (`measure.grid`, shared with measure-memory).
grid = measure.grid


def log_record(r, t0):
    """One line per measured record: its id and both steps' peaks and phases."""
    p1, p2 = r["peak"]["step1"], r["peak"]["step2"]
    print(f"{time.time() - t0:6.1f}s {r['id']} step1 {p1['peak_bytes']} ({p1['phase']}) "
          f"step2 {p2['peak_bytes']} ({p2['phase']})", flush=True)


def write_records(path, records):
    """The records as the fixture's JSON list (one space indent, final newline)."""
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    print(f"wrote {len(records)} records; torch {torch.__version__}, transformers {transformers.__version__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--regimes", nargs="+", default=["full", "lora-r8", "dora-r8"])
    ap.add_argument("--shapes", nargs="+", default=["2x64", "4x128"], help="BATCHxSEQ")
    ap.add_argument("--dtype-modes", nargs="+", default=["fp32", "autocast-bf16", "bf16-base"])
    ap.add_argument("--attn", nargs="+", default=["eager", "sdpa"])
    ap.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    records = []
    t0 = time.time()
    for m, reg, attn, dm, b, s, ckpt in grid(args):
        try:
            r = measure_peak(m, reg, b, s, dm, attn, ckpt)
        except ValueError as e:
            if "ParamWrapper" not in str(e):
                raise
            print(f"{m}|{reg}|b{b}s{s}|{dm}|{attn} skipped: peft: {str(e).splitlines()[0]}",
                  flush=True)
            continue
        records.append(r)
        log_record(r, t0)
    write_records(args.out, records)


if __name__ == "__main__":
    main()
