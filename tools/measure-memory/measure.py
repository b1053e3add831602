"""Measure what one training step really holds, bucket by bucket, on small real models (CPU).

Writes records in the format of fixtures/memory/measured_memory.json (see fixtures/memory/README.md).
Usage: see README.md beside this file.
"""
import argparse
import json
import random
from collections import defaultdict

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import transformers
from transformers import (AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig,
                          Qwen2Config)

CONFIGS = {"gpt2": GPT2Config, "llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}

# name -> (family, config kwargs). Dropouts are forced to 0 below.
MODELS = {
    "gpt2-e64-l4": ("gpt2", dict(n_embd=64, n_layer=4, n_head=4, n_inner=256, vocab_size=65, n_positions=128)),
    "gpt2-e128-l4": ("gpt2", dict(n_embd=128, n_layer=4, n_head=4, n_inner=None, vocab_size=512, n_positions=128)),
    "llama-h128-l2-gqa": ("llama", dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                                        max_position_embeddings=128, tie_word_embeddings=False)),
    "llama-h96-l3-h6kv2-v1024": ("llama", dict(hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                                               num_attention_heads=6, num_key_value_heads=2, vocab_size=1024,
                                               max_position_embeddings=128, tie_word_embeddings=False)),
    "mistral-h128-l2-gqa": ("mistral", dict(hidden_size=128, intermediate_size=448, num_hidden_layers=2,
                                            num_attention_heads=8, num_key_value_heads=2, vocab_size=2048,
                                            max_position_embeddings=128, tie_word_embeddings=False,
                                            sliding_window=None)),
    "qwen2-h64-l2-tied": ("qwen2", dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=1536,
                                        max_position_embeddings=128, tie_word_embeddings=True)),
}
DROPOUT_KEYS = ["resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "summary_first_dropout"]


def build(name, attn):
    family, kwargs = MODELS[name]
    cfg = CONFIGS[family](**kwargs)
    for k in DROPOUT_KEYS:
        if hasattr(cfg, k):
            setattr(cfg, k, 0.0)
    cfg._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    model.train()
    return family, cfg, model


def apply_regime(model, regime):
    if regime == "full":
        return model, None
    from peft import LoraConfig, get_peft_model
    kind, r = regime.split("-r")
    r = int(r)
    lc = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", bias="none",
                    use_dora=(kind == "dora"), task_type="CAUSAL_LM")
    return get_peft_model(model, lc), {"r": r, "use_dora": kind == "dora", "target_modules": "all-linear"}


class CastWatch(TorchDispatchMode):
    """Records the storages of dtype casts of parameters (autocast's weight copies)."""

    def __init__(self, param_ptrs):
        super().__init__()
        self.param_ptrs = param_ptrs
        self.cast_ptrs = set()
        self.keep = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.Tensor):
            if args[0].untyped_storage().data_ptr() in self.param_ptrs:
                self.cast_ptrs.add(out.untyped_storage().data_ptr())
                self.keep.append(out)
        return out


def measure(name, regime, batch, seq, dtype_mode, attn):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    family, cfg, model = build(name, attn)
    model, lora = apply_regime(model, regime)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    packs = []
    # Every packed tensor is held until the end of the forward so that no address is reused: a
    # storage counts once however often it is saved, and two storages never merge. (DoRA's
    # weight-norm graph is discarded during the forward in peft; holding it counts it, as the
    # lab's reference measurements do.)
    held = []

    def pack(t):
        held.append(t)
        st = t.untyped_storage()
        packs.append((st.data_ptr(), st.nbytes(), str(t.dtype).replace("torch.", ""), list(t.shape), t.nbytes))
        return t

    watch = CastWatch(param_ptrs)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), watch:
        if dtype_mode == "autocast-bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(input_ids=ids, labels=ids)
        else:
            out = model(input_ids=ids, labels=ids)
    storages = {}
    raw = 0
    saved_param = {}
    for ptr, nbytes, dtype, shape, tbytes in packs:
        if ptr in param_ptrs:
            saved_param[ptr] = nbytes
            continue
        raw += tbytes
        g = storages.setdefault(ptr, {"shape": shape, "dtype": dtype, "storage_bytes": nbytes, "packs": 0})
        g["packs"] += 1
    dedup = sum(g["storage_bytes"] for g in storages.values())
    casts = sum(g["storage_bytes"] for p, g in storages.items() if p in watch.cast_ptrs)
    by_dtype = defaultdict(int)
    groups = defaultdict(int)
    for g in storages.values():
        by_dtype[g["dtype"]] += g["storage_bytes"]
        groups[(tuple(g["shape"]), g["dtype"], g["storage_bytes"])] += 1
    logits = out.logits
    out.loss.backward()
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    opt.step()
    state = defaultdict(int)
    step_bytes = 0
    for st in opt.state.values():
        for k, v in st.items():
            if k == "step":
                step_bytes += v.nbytes
            else:
                state[k] += v.nbytes
    uniq = {p.untyped_storage().data_ptr(): p for p in params}
    return {
        "id": f"{name}|{regime}|b{batch}s{seq}|{dtype_mode}|{attn}",
        "model": name,
        "shape": {
            "family": family, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            "intermediate_size": (getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
                                  or 4 * cfg.hidden_size),
            "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.max_position_embeddings,
            "tie_word_embeddings": bool(cfg.tie_word_embeddings), "config_kwargs": MODELS[name][1],
        },
        "regime": regime, "lora": lora, "dtype_mode": dtype_mode,
        "attn_implementation_requested": attn,
        "attn_implementation_used": model.config._attn_implementation,
        "batch": batch, "seq": seq, "param_dtype": "float32",
        "params": {
            "trainable_count": sum(p.numel() for p in trainable),
            "frozen_count": sum(p.numel() for p in uniq.values() if not p.requires_grad),
            "trainable_bytes": sum(p.nbytes for p in trainable),
            "frozen_bytes": sum(p.nbytes for p in uniq.values() if not p.requires_grad),
            "total_bytes": sum(p.nbytes for p in uniq.values()),
        },
        "grads": {"bytes": sum(p.grad.nbytes for p in trainable if p.grad is not None),
                  "frozen_params_with_grad": sum(1 for p in uniq.values() if not p.requires_grad and p.grad is not None)},
        "optimizer": {"class": "torch.optim.AdamW", "num_params_with_state": len(opt.state),
                      "state_bytes_by_key": dict(state), "state_bytes_excl_step": sum(state.values()),
                      "step_bytes": step_bytes, "step_dtype": "float32"},
        "activations": {
            "activation_bytes_dedup": dedup,
            "activation_bytes_raw": raw,
            "weight_cast_bytes_dedup": casts,
            "activation_bytes_dedup_excl_weight_casts": dedup - casts,
            "saved_param_bytes_dedup": sum(saved_param.values()),
            "saved_all_bytes_dedup": dedup + sum(saved_param.values()),
            "num_saved_tensors": len(packs),
            "num_unique_storages_nonparam": len(storages),
            "activation_bytes_dedup_by_dtype": dict(by_dtype),
            "activation_storage_groups": [
                {"shape": list(k[0]), "dtype": k[1], "storage_bytes": k[2], "count": n}
                for k, n in sorted(groups.items(), key=lambda kv: -kv[0][2] * kv[1])
            ],
        },
        "logits": {"bytes": logits.nbytes, "dtype": str(logits.dtype).replace("torch.", "")},
        "loss": round(float(out.loss), 3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--regimes", nargs="+", default=["full", "lora-r4", "lora-r8", "lora-r16", "dora-r8"])
    ap.add_argument("--shapes", nargs="+", default=["1x16", "2x32", "4x64"], help="BATCHxSEQ")
    ap.add_argument("--dtype-modes", nargs="+", default=["fp32", "autocast-bf16"])
    ap.add_argument("--attn", nargs="+", default=["eager", "sdpa"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    records = []
    for m in args.models:
        for reg in args.regimes:
            for attn in args.attn:
                for dm in args.dtype_modes:
                    for bs in args.shapes:
                        b, s = map(int, bs.split("x"))
                        records.append(measure(m, reg, b, s, dm, attn))
                        print(records[-1]["id"], records[-1]["activations"]["activation_bytes_dedup"], flush=True)
    with open(args.out, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    print(f"wrote {len(records)} records; torch {torch.__version__}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
