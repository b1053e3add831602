"""Measure one training step of the PEFT methods of issue 14 on small models (CPU), bucket by
bucket, with measure.py's machinery (saved-tensor hooks, autocast cast watch, AdamW step).

Writes fixtures/peft/methods_memory.json: one record per (model, method spec, target set, shape,
precision) in measure.py's record format, `regime` being the ftbudget spec. The Rust test
crates/roster/tests/peft_methods_memory.rs compares weights, gradients and optimizer exactly and
the activations with each method's recorded tolerance.

    /opt/pyref/bin/python tools/measure-memory/methods.py       # ~3 min on 2 cores
"""
import json
import os
import random
import sys
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import (AdaLoraConfig, BOFTConfig, FourierFTConfig, IA3Config, LNTuningConfig, LoHaConfig,  # noqa: E402
                  LoKrConfig, OFTConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig,
                  TrainableTokensConfig, VeraConfig, get_peft_model)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402

CL = dict(task_type="CAUSAL_LM")
AL = "all-linear"
# The models measured (two families) and the two target sets of every targeted method: every
# Linear of the blocks, and the attention's q and v only (the ftbudget spec's `targets=` text and
# peft's `target_modules`).
MODELS = ["llama-h128-l2-gqa", "qwen2-h64-l2-tied"]
TARGET_SETS = {"all": ("all-linear", AL), "qv": ("q_proj+v_proj", ["q_proj", "v_proj"])}


def methods_for(model, targets):
    """(ftbudget spec, peft config factory) of every method on target set `targets` of `model`;
    the methods without targets (LN tuning, the prompt methods, trainable tokens) come with
    `all` only."""
    t, tm = TARGET_SETS[targets]
    ff = ["down_proj"] if targets == "all" else []
    out = [
        (f"ia3:targets={t},feedforward={'+'.join(ff)}",
         lambda: IA3Config(target_modules=tm, feedforward_modules=ff, **CL)),
        (f"vera:r=16,targets={t}", lambda: VeraConfig(r=16, target_modules=tm, **CL)),
        (f"loha:r=8,alpha=8,targets={t}", lambda: LoHaConfig(r=8, alpha=8, target_modules=tm, **CL)),
        (f"lokr:r=8,alpha=8,targets={t}", lambda: LoKrConfig(r=8, alpha=8, target_modules=tm, **CL)),
        (f"adalora:init_r=12,target_r=8,targets={t}",
         lambda: AdaLoraConfig(init_r=12, target_r=8, total_step=100, target_modules=tm, **CL)),
        (f"oft:block_size=32,targets={t}", lambda: OFTConfig(r=0, oft_block_size=32, target_modules=tm, **CL)),
        (f"boft:block_size=4,n_butterfly_factor=1,targets={t}",
         lambda: BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=1, target_modules=tm, **CL)),
        (f"fourierft:n_frequency=1000,targets={t}",
         lambda: FourierFTConfig(n_frequency=1000, target_modules=tm, **CL)),
    ]
    if targets == "all":
        out += [
            ("ln-tuning", lambda: LNTuningConfig(**CL)),
            ("prompt-tuning:virtual_tokens=20", lambda: PromptTuningConfig(num_virtual_tokens=20, **CL)),
            ("prefix-tuning:virtual_tokens=30", lambda: PrefixTuningConfig(num_virtual_tokens=30, **CL)),
            ("p-tuning:virtual_tokens=20,encoder_hidden=256",
             lambda: PromptEncoderConfig(num_virtual_tokens=20, encoder_hidden_size=256, **CL)),
            ("trainable-tokens:targets=embed_tokens,tokens=0+1+2",
             lambda: TrainableTokensConfig(target_modules=["embed_tokens"], token_indices=[0, 1, 2], **CL)),
        ]
    return out


def measure_method(name, spec, make, batch, seq, dtype_mode, attn):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    family, cfg, model = measure.build(name, attn)
    model = get_peft_model(model, make())
    model.train()
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    # Buffers an adapter's forward saves (OFT's index buffers, VeRA's shared projections,
    # FourierFT's frequency locations, kept in a dict rather than registered) are memory the
    # weights bucket holds already (`buffer_bytes`): left out of the activations, as parameters are.
    buffer_tensors = [b for b in model.buffers()] + [
        t for m in model.modules() if isinstance(getattr(m, "indices", None), dict) for t in m.indices.values()]
    buffer_ptrs = {b.untyped_storage().data_ptr() for b in buffer_tensors}
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    packs, held = [], []

    def pack(t):
        held.append(t)
        st = t.untyped_storage()
        packs.append((st.data_ptr(), st.nbytes(), str(t.dtype).replace("torch.", ""), list(t.shape), t.nbytes))
        return t

    watch = measure.CastWatch(param_ptrs)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), watch:
        if dtype_mode == "autocast-bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(input_ids=ids, labels=ids)
        else:
            out = model(input_ids=ids, labels=ids)
    activations = measure.forward_packs_summary(packs, param_ptrs | buffer_ptrs, watch.cast_ptrs)
    out.loss.backward()
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    opt.step()
    buffers = sum(b.nbytes for n, b in model.named_buffers() if "rotary" not in n)
    # FourierFT's frequency locations: device tensors kept in a dict, not registered buffers.
    buffers += sum(t.nbytes for m in model.modules() if isinstance(getattr(m, "indices", None), dict)
                   for t in m.indices.values())
    return measure.step_record(name, spec, batch, seq, dtype_mode, attn, family, cfg, model, None, params,
                               trainable, opt, activations, out.logits, out.loss,
                               extra={"buffer_bytes": buffers})


def main():
    torch.set_num_threads(2)
    records = []
    for name in MODELS:
        for spec, make in methods_for(name, "all") + methods_for(name, "qv"):
            for batch, seq in [(2, 32), (4, 64)]:
                for dtype_mode in ["fp32", "autocast-bf16"]:
                    r = measure_method(name, spec, make, batch, seq, dtype_mode, "sdpa")
                    records.append(r)
                    print(r["id"], r["activations"]["activation_bytes_dedup_excl_weight_casts"], flush=True)
    out = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "peft", "methods_memory.json")
    with open(out, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
