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
import torch.utils.checkpoint
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
import transformers
from transformers import (AutoConfig, AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig,
                          Qwen2Config)

CONFIGS = {"gpt2": GPT2Config, "llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}

# name -> (family, config kwargs). Every dropout key is set to `--dropout` (0 by default) below.
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
    # issue 9's families (fixtures/memory/measured_memory_families.json); the family is the
    # model_type, built with AutoConfig.for_model
    "qwen3-h64-l2-qknorm": ("qwen3", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, head_dim=32, vocab_size=512, max_position_embeddings=128,
                                          tie_word_embeddings=False)),
    "qwen3_moe-h64-l3-e4": ("qwen3_moe", dict(hidden_size=64, intermediate_size=192, moe_intermediate_size=48,
                                              num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                              num_experts=4, num_experts_per_tok=2, mlp_only_layers=[1], norm_topk_prob=True,
                                              vocab_size=512, max_position_embeddings=128, tie_word_embeddings=False)),
    "gemma3_text-h64-l3": ("gemma3_text", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
                                               num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
                                               layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                               vocab_size=512, max_position_embeddings=128)),
    "gpt_oss-h64-l2-e4": ("gpt_oss", dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                                          sliding_window=16, vocab_size=512, max_position_embeddings=128)),
    "deepseek_v3-h64-l3-mla": ("deepseek_v3", dict(hidden_size=64, intermediate_size=192, moe_intermediate_size=48,
                                                   num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                                                   first_k_dense_replace=1, n_routed_experts=4, n_shared_experts=1,
                                                   num_experts_per_tok=2, n_group=2, topk_group=1, q_lora_rank=32,
                                                   kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                                                   vocab_size=512, max_position_embeddings=128, tie_word_embeddings=False)),
    "olmo2-h64-l2": ("olmo2", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=512, max_position_embeddings=128,
                                   tie_word_embeddings=False)),
    "phi-h64-l2-partial": ("phi", dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=4, partial_rotary_factor=0.5, vocab_size=512,
                                       max_position_embeddings=128, tie_word_embeddings=False)),
    "gemma2-h64-l2-softcap": ("gemma2", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
                                            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, vocab_size=512,
                                            max_position_embeddings=128)),
    "qwen2_moe-h64-l3-shared": ("qwen2_moe", dict(hidden_size=64, intermediate_size=192, moe_intermediate_size=48,
                                                  shared_expert_intermediate_size=96, num_hidden_layers=3,
                                                  num_attention_heads=4, num_key_value_heads=2, num_experts=4,
                                                  num_experts_per_tok=2, mlp_only_layers=[0], vocab_size=512,
                                                  max_position_embeddings=128, tie_word_embeddings=False)),
    "falcon-h64-l2-mq-parallel": ("falcon", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=512,
                                                 max_position_embeddings=128, multi_query=True, parallel_attn=True)),
    # more decoder families (fixtures/memory/measured_memory_families_more.json)
    "glm4_moe-h64-l3-shared": ("glm4_moe", dict(hidden_size=64, intermediate_size=192, moe_intermediate_size=48,
                                                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                                first_k_dense_replace=1, n_routed_experts=4, n_shared_experts=1,
                                                num_experts_per_tok=2, n_group=1, topk_group=1, attention_bias=True,
                                                use_qk_norm=True, partial_rotary_factor=0.5, vocab_size=512,
                                                max_position_embeddings=128, tie_word_embeddings=False)),
    "olmoe-h64-l2-e4": ("olmoe", dict(hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=4, num_experts=4, num_experts_per_tok=2, vocab_size=512,
                                      max_position_embeddings=128, tie_word_embeddings=False)),
    "olmo3-h64-l4": ("olmo3", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, sliding_window=16, vocab_size=512, max_position_embeddings=128,
                                   tie_word_embeddings=False)),
    "seed_oss-h64-l2-bias": ("seed_oss", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                              num_key_value_heads=2, head_dim=16, attention_bias=True, vocab_size=512,
                                              max_position_embeddings=128, tie_word_embeddings=False)),
    "arcee-h64-l2-relu2": ("arcee", dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=128,
                                         tie_word_embeddings=False)),
    "olmo-h64-l2-noaffine": ("olmo", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, vocab_size=512, max_position_embeddings=128,
                                          tie_word_embeddings=False)),
    "gpt_bigcode-e64-l2-mq": ("gpt_bigcode", dict(n_embd=64, n_layer=2, n_head=4, n_inner=256, vocab_size=512,
                                                  n_positions=128, multi_query=True)),
    "hunyuan_v1_dense-h64-l2": ("hunyuan_v1_dense", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                                         vocab_size=512, max_position_embeddings=128,
                                                         tie_word_embeddings=False)),
}
DROPOUT_KEYS = ["resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "summary_first_dropout"]


def build(name, attn, dropout=0.0):
    family, kwargs = MODELS[name]
    cfg = CONFIGS[family](**kwargs) if family in CONFIGS else AutoConfig.for_model(family, **kwargs)
    for k in DROPOUT_KEYS:
        if hasattr(cfg, k):
            setattr(cfg, k, dropout)
    cfg._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    model.train()
    return family, cfg, model


def apply_regime(model, regime, lora_dropout=0.0):
    if regime == "full":
        return model, None
    from peft import LoraConfig, get_peft_model
    kind, r = regime.split("-r")
    r = int(r)
    lc = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=lora_dropout, target_modules="all-linear", bias="none",
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
    activations = forward_packs_summary(packs, param_ptrs, watch.cast_ptrs)
    logits = out.logits
    out.loss.backward()
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    opt.step()
    return step_record(name, regime, batch, seq, dtype_mode, attn, family, cfg, model, lora, params,
                       trainable, opt, activations, logits, out.loss)


def forward_packs_summary(packs, param_ptrs, cast_ptrs):
    """The `activations` fields of the original records from the forward's packs
    `(storage key, storage bytes, dtype, shape, tensor bytes)`, one count per storage."""
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
    casts = sum(g["storage_bytes"] for p, g in storages.items() if p in cast_ptrs)
    by_dtype = defaultdict(int)
    groups = defaultdict(int)
    for g in storages.values():
        by_dtype[g["dtype"]] += g["storage_bytes"]
        groups[(tuple(g["shape"]), g["dtype"], g["storage_bytes"])] += 1
    return {
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
    }


def step_record(name, regime, batch, seq, dtype_mode, attn, family, cfg, model, lora, params, trainable,
                opt, activations, logits, loss, id_suffix="", extra=None):
    state = defaultdict(int)
    step_bytes = 0
    for st in opt.state.values():
        for k, v in st.items():
            if k == "step":
                step_bytes += v.nbytes
            else:
                state[k] += v.nbytes
    uniq = {p.untyped_storage().data_ptr(): p for p in params}
    record = {
        "id": f"{name}|{regime}|b{batch}s{seq}|{dtype_mode}|{attn}{id_suffix}",
        "model": name,
        "shape": {
            "family": family, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            "intermediate_size": (getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
                                  or getattr(cfg, "ffn_hidden_size", None) or 4 * cfg.hidden_size),
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
        "activations": activations,
        "logits": {"bytes": logits.nbytes, "dtype": str(logits.dtype).replace("torch.", "")},
        "loss": round(float(loss), 3),
    }
    record.update(extra or {})
    return record


# ---------------------------------------------------------------------------------------------
# Lifetime-tracked measurement (gradient checkpointing, dropout): see README.md beside this file.


class LiveCastWatch(TorchDispatchMode):
    """Knows which live storages are dtype casts of parameters (autocast's weight copies) without
    keeping them alive: a cast is remembered by a weak reference to its storage."""

    def __init__(self, param_ptrs):
        super().__init__()
        self.param_ptrs = param_ptrs
        self.casts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.Tensor):
            if args[0].untyped_storage().data_ptr() in self.param_ptrs:
                st = out.untyped_storage()
                self.casts[st.data_ptr()] = (StorageWeakRef(st), st.nbytes())
        return out

    def live_cast_bytes(self):
        return sum(n for ref, n in self.casts.values() if not ref.expired())

    def is_cast(self, ptr):
        cast = self.casts.get(ptr)
        return cast is not None and not cast[0].expired()


class SavedLifetimes:
    """Every storage kept for backward, with its lifetime, and the peak of their sum.

    A storage enters when it is first kept for backward (packed by the step's own saved-tensor
    hook, saved as a checkpoint input, bound as a checkpointed block's keyword argument, or saved
    during a checkpointed block's recomputation in the backward) and leaves when its last
    reference dies (a weak reference to the storage expires). The live sum can grow only when a
    storage enters, so sampling it after every entry finds the exact peak. Parameters are left
    out; autocast's weight casts are summed apart.
    """

    def __init__(self, param_ptrs, casts):
        self.param_ptrs = param_ptrs
        self.casts = casts
        self.live = {}  # storage address -> entry (an address is unique among live storages)
        self.phase = "forward"
        self.checkpoint_depth = 0
        self.forward_packs = []  # the hook's forward packs, in the original records' format
        self.forward_cast_keys = set()
        self.entries = 0
        self.peak = {"bytes": -1}
        self.peak_casts = 0
        self.peak_with_casts = 0

    def add(self, t, origin):
        st = t.untyped_storage()
        ptr, nbytes = st.data_ptr(), st.nbytes()
        e = self.live.get(ptr)
        if e is not None and e["ref"].expired():
            e = None
        is_param = ptr in self.param_ptrs
        if origin in ("hook", "checkpoint-input") and self.phase == "forward":
            # The original records' fields count every storage the hook packed in the forward
            # once. A dead storage's address can be reused, so a storage is keyed by its address
            # and the serial number of its entry.
            key = ptr if is_param else (ptr, e["serial"] if e is not None else self.entries)
            self.forward_packs.append((key, nbytes, str(t.dtype).replace("torch.", ""), list(t.shape), t.nbytes))
            if not is_param and self.casts.is_cast(ptr):
                self.forward_cast_keys.add(key)
        if e is not None or is_param or nbytes == 0:
            return
        self.live[ptr] = {"ref": StorageWeakRef(st), "bytes": nbytes, "origin": origin, "serial": self.entries,
                          "dtype": str(t.dtype).replace("torch.", ""), "cast": self.casts.is_cast(ptr)}
        self.entries += 1
        self.sample()

    def sample(self):
        for ptr in [p for p, e in self.live.items() if e["ref"].expired()]:
            del self.live[ptr]
        acts = [e for e in self.live.values() if not e["cast"]]
        total = sum(e["bytes"] for e in acts)
        casts = sum(e["bytes"] for e in self.live.values() if e["cast"])
        self.peak_casts = max(self.peak_casts, casts)
        self.peak_with_casts = max(self.peak_with_casts, total + casts)
        if total > self.peak["bytes"]:
            by_origin, by_dtype = defaultdict(int), defaultdict(int)
            for e in acts:
                by_origin[e["origin"]] += e["bytes"]
                by_dtype[e["dtype"]] += e["bytes"]
            self.peak = {"bytes": total, "weight_cast_bytes": casts, "phase": self.phase,
                         "by_origin": dict(sorted(by_origin.items())), "by_dtype": dict(sorted(by_dtype.items()))}
        return total, casts


class TrackedCheckpoint:
    """Wraps a layer's checkpoint function: tensors bound into the block's keyword arguments are
    held by the checkpoint's recompute closure until the block's backward, and the hidden states
    that `checkpoint` saves as its inputs pass through the step's hook while `checkpoint_depth`
    is raised."""

    def __init__(self, fn, lifetimes):
        self.fn, self.lifetimes = fn, lifetimes

    def __call__(self, function, *args, **kwargs):
        for v in getattr(function, "keywords", {}).values():
            if isinstance(v, torch.Tensor):
                self.lifetimes.add(v, "checkpoint-kwargs")
            elif isinstance(v, (tuple, list)):
                for x in v:
                    if isinstance(x, torch.Tensor):
                        self.lifetimes.add(x, "checkpoint-kwargs")
        self.lifetimes.checkpoint_depth += 1
        try:
            return self.fn(function, *args, **kwargs)
        finally:
            self.lifetimes.checkpoint_depth -= 1


def gpu_like_dropout(input, p=0.5, training=True, inplace=False):
    """`F.dropout` as on GPU: `native_dropout`, whose backward keeps a 1-byte bool mask. (On CPU
    `F.dropout` multiplies by a noise tensor of the input's dtype and saves that instead.)"""
    if training and 0.0 < p < 1.0:
        return torch.native_dropout(input, p, True)[0]
    return ORIGINAL_DROPOUT(input, p, training, inplace)


def gpu_like_sdpa(*args, dropout_p=0.0, **kwargs):
    """`scaled_dot_product_attention` with the memory of a GPU fused kernel: with dropout the CPU
    kernel falls back to the math path (materialized probabilities and noise), while flash and
    memory-efficient kernels draw the dropout inside the kernel and keep only an RNG seed and
    offset. The call runs with `dropout_p=0`, which saves exactly the fused kernel's tensors."""
    return ORIGINAL_SDPA(*args, dropout_p=0.0, **kwargs)


ORIGINAL_DROPOUT = torch.nn.functional.dropout
ORIGINAL_SDPA = torch.nn.functional.scaled_dot_product_attention
ORIGINAL_RECOMPUTATION_HOOK = torch.utils.checkpoint._recomputation_hook


def tracked_recomputation_hook(lifetimes):
    class TrackedRecomputationHook(ORIGINAL_RECOMPUTATION_HOOK):
        """torch's recomputation hook, which keeps a block's recomputed saved tensors until the
        block's backward unpacks them, reporting each one to `lifetimes` first."""

        def __init__(self, target_frame_ref, gid):
            super().__init__(target_frame_ref, gid)
            inner = self.pack_hook

            def pack_hook(x):
                lifetimes.add(x, "recompute")
                return inner(x)

            pack_hook._checkpoint_internal = True
            self.pack_hook = pack_hook

    return TrackedRecomputationHook


def measure_tracked(name, regime, batch, seq, dtype_mode, attn, checkpointing, dropout):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    family, cfg, model = build(name, attn, dropout)
    use_reentrant = None
    if checkpointing:
        # The call users make (the Trainer's `gradient_checkpointing=True` makes the same one);
        # transformers 5.24 deprecates it in favour of `activation_checkpointing_enable`, which
        # it forwards to, and fills in `{"use_reentrant": False}` when no kwargs are given.
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable()
    model, lora = apply_regime(model, regime, lora_dropout=dropout)
    if lora is not None:
        lora["lora_dropout"] = dropout
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    watch = LiveCastWatch(param_ptrs)
    lifetimes = SavedLifetimes(param_ptrs, watch)
    layers_checkpointed = 0
    for m in model.modules():
        fn = getattr(m, "_gradient_checkpointing_func", None)
        if fn is not None and getattr(m, "gradient_checkpointing", False):
            use_reentrant = fn.keywords.get("use_reentrant") if hasattr(fn, "keywords") else None
            m._gradient_checkpointing_func = TrackedCheckpoint(fn, lifetimes)
            layers_checkpointed += 1

    def pack(t):
        lifetimes.add(t, "checkpoint-input" if lifetimes.checkpoint_depth else "hook")
        return t

    torch.nn.functional.dropout = gpu_like_dropout
    torch.nn.functional.scaled_dot_product_attention = gpu_like_sdpa
    torch.utils.checkpoint._recomputation_hook = tracked_recomputation_hook(lifetimes)
    try:
        with watch:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                if dtype_mode == "autocast-bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        out = model(input_ids=ids, labels=ids)
                        # Saved or not: autocast caches the casts of trainable weights until it exits.
                        forward_end_live_casts = watch.live_cast_bytes()
                else:
                    out = model(input_ids=ids, labels=ids)
                    forward_end_live_casts = 0
            forward_end, forward_end_casts = lifetimes.sample()
            loss, logits = out.loss, out.logits
            del out
            lifetimes.phase = "backward"
            loss.backward()
    finally:
        torch.nn.functional.dropout = ORIGINAL_DROPOUT
        torch.nn.functional.scaled_dot_product_attention = ORIGINAL_SDPA
        torch.utils.checkpoint._recomputation_hook = ORIGINAL_RECOMPUTATION_HOOK
    activations = forward_packs_summary(lifetimes.forward_packs, param_ptrs, lifetimes.forward_cast_keys)
    activations["peak"] = {
        "saved_bytes_excl_weight_casts": lifetimes.peak["bytes"],
        "weight_cast_bytes_at_peak": lifetimes.peak["weight_cast_bytes"],
        "phase": lifetimes.peak["phase"],
        "by_origin": lifetimes.peak["by_origin"],
        "by_dtype": lifetimes.peak["by_dtype"],
        "weight_cast_bytes_peak": lifetimes.peak_casts,
        "saved_bytes_incl_weight_casts_peak": lifetimes.peak_with_casts,
        "forward_end_live_weight_cast_bytes": forward_end_live_casts,
        "forward_end_saved_bytes_excl_weight_casts": forward_end,
        "forward_end_weight_cast_bytes": forward_end_casts,
    }
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    opt.step()
    suffix = ("|ckpt" if checkpointing else "") + (f"|dropout{dropout:g}" if dropout else "")
    extra = {
        "gradient_checkpointing": bool(checkpointing),
        "checkpoint": ({"api": "model.gradient_checkpointing_enable()", "use_reentrant": use_reentrant,
                        "layers": layers_checkpointed} if checkpointing else None),
        "dropout": dropout,
        "dropout_keys": {k: getattr(cfg, k) for k in DROPOUT_KEYS if hasattr(cfg, k)},
        "dropout_kernel": "native_dropout (1-byte mask, as on GPU)" if dropout else None,
        "sdpa_dropout": ("run with dropout_p=0 (a GPU fused kernel's saved tensors)"
                         if dropout and model.config._attn_implementation == "sdpa" else None),
        "lifetimes_tracked": True,
    }
    return step_record(name, regime, batch, seq, dtype_mode, attn, family, cfg, model, lora, params,
                       trainable, opt, activations, logits, loss, suffix, extra)


def supports_sdpa(name):
    """Does transformers build this model with sdpa? (gpt_oss refuses it: its attention sinks
    need the eager path.)"""
    family, kwargs = MODELS[name]
    cfg = CONFIGS[family](**kwargs) if family in CONFIGS else AutoConfig.for_model(family, **kwargs)
    with torch.device("meta"):
        try:
            AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
        except ValueError as e:
            if "scaled_dot_product_attention" in str(e):
                return False
            raise
    return True


def grid(args):
    """Every (model, regime, attention, dtype mode, batch, seq, checkpointing) the command line
    asks for, in the order the fixtures keep them (checkpointing as a bool)."""
    for m in args.models:
        for reg in args.regimes:
            for attn in args.attn:
                for dm in args.dtype_modes:
                    for bs in args.shapes:
                        b, s = map(int, bs.split("x"))
                        for ckpt in args.checkpointing:
                            yield m, reg, attn, dm, b, s, ckpt == "on"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--regimes", nargs="+", default=["full", "lora-r4", "lora-r8", "lora-r16", "dora-r8"])
    ap.add_argument("--shapes", nargs="+", default=["1x16", "2x32", "4x64"], help="BATCHxSEQ")
    ap.add_argument("--dtype-modes", nargs="+", default=["fp32", "autocast-bf16"])
    ap.add_argument("--attn", nargs="+", default=["eager", "sdpa"])
    ap.add_argument("--checkpointing", nargs="+", default=["off"], choices=["off", "on"],
                    help="on: model.gradient_checkpointing_enable() (transformers' defaults)")
    ap.add_argument("--dropout", nargs="+", type=float, default=[0.0],
                    help="probability for every dropout key of the config and peft's lora_dropout")
    ap.add_argument("--lifetimes", action="store_true",
                    help="track saved-tensor lifetimes (implied by checkpointing on or dropout above 0)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    records = []
    for m, reg, attn, dm, b, s, ckpt in grid(args):
        for p in args.dropout:
            if attn == "sdpa" and not supports_sdpa(m):
                print(f"{m}|{reg}|b{b}s{s}|{dm}|sdpa skipped: no sdpa in transformers "
                      f"{transformers.__version__}", flush=True)
                continue
            try:
                if args.lifetimes or ckpt or p > 0:
                    records.append(measure_tracked(m, reg, b, s, dm, attn, ckpt, p))
                    print(records[-1]["id"],
                          records[-1]["activations"]["peak"]["saved_bytes_excl_weight_casts"], flush=True)
                else:
                    records.append(measure(m, reg, b, s, dm, attn))
                    print(records[-1]["id"], records[-1]["activations"]["activation_bytes_dedup"],
                          flush=True)
            except ValueError as e:
                if "ParamWrapper" not in str(e):
                    raise
                # peft refuses DoRA on fused experts (all-linear on MoE models)
                print(f"{m}|{reg}|b{b}s{s}|{dm}|{attn} skipped: peft: {str(e).splitlines()[0]}",
                      flush=True)
    with open(args.out, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    print(f"wrote {len(records)} records; torch {torch.__version__}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
