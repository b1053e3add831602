"""Measure QLoRA's step peak with MemTracker (CPU, two steps): measure_peak.py's loop and records
over a bitsandbytes 4-bit base.

Writes fixtures/memory/measured_peak_qlora.json (see fixtures/memory/README.md, "Peak of the step:
QLoRA"). transformers quantizes only in `from_pretrained`, so the model is built from its config
as in measure_peak.py, saved to a temporary folder and loaded back with a `BitsAndBytesConfig`
(NF4, blocksize 64; `qlora-r8-dq`: double quantization), then prepared as QLoRA recipes do
(`peft.prepare_model_for_kbit_training`: every parameter frozen, the non-4-bit ones upcast to
fp32; with checkpointing, its default, the embedding output made to require grad and
`gradient_checkpointing_enable()`), then LoRA r=8 all-linear.

- `fp32`: loaded in fp32, `bnb_4bit_compute_dtype=torch.float32`, no autocast.
- `autocast-bf16`: the recipe's bf16 run: loaded with `dtype=torch.bfloat16` (so the 4-bit
  weights' quant state remembers bf16, the dtype the backward dequantizes to), embeddings, norms
  and lm_head upcast to fp32 by `prepare_model_for_kbit_training`,
  `bnb_4bit_compute_dtype=torch.bfloat16`, the step under bf16 autocast (Trainer `bf16=True`).
- `bf16-base`: as `autocast-bf16` without `prepare_model_for_kbit_training` (a script that calls
  `get_peft_model` on the loaded model directly): embeddings, norms and lm_head stay bf16; with
  checkpointing, `gradient_checkpointing_enable()` as in measure_peak.py.

The 4-bit weights' quant states (absmax, codebooks, nested absmax and offset) are neither
parameters nor buffers: measure_peak.py books them as parameters and records their bytes
(`params.quant_state_bytes`, included in `params.total_bytes`).
"""
import argparse
import os
import random
import tempfile
import time
import warnings

import numpy as np
import torch

import measure_peak as mp

REGIMES = ["qlora-r8", "qlora-r8-dq"]
DTYPE_MODES = {"fp32": torch.float32, "autocast-bf16": torch.bfloat16, "bf16-base": torch.bfloat16}
# The dtype modes whose model goes through `prepare_model_for_kbit_training`.
PREPARED = {"fp32", "autocast-bf16"}


def parse_regime(regime):
    """`qlora-r{rank}` or `qlora-r{rank}-dq` (double quantization): (rank, double_quant)."""
    rank, _, dq = regime.removeprefix("qlora-r").partition("-")
    if dq not in ("", "dq"):
        raise ValueError(f"unknown QLoRA regime {regime}")
    return int(rank), dq == "dq"


def quantization(regime, dtype_mode):
    """The record's `quantization` field: the BitsAndBytesConfig and the load dtype."""
    _, double_quant = parse_regime(regime)
    dtype = str(DTYPE_MODES[dtype_mode]).removeprefix("torch.")
    return {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": double_quant,
            "bnb_4bit_compute_dtype": dtype, "load_dtype": dtype, "blocksize": 64,
            "prepare_model_for_kbit_training": dtype_mode in PREPARED}


def build_qlora(name, regime, dtype_mode, attn, checkpointing):
    """measure_peak.build_model's counterpart for QLoRA (see the module docstring)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    rank, double_quant = parse_regime(regime)
    dtype = DTYPE_MODES[dtype_mode]
    family, cfg, model = mp.measure.build(name, attn)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                             bnb_4bit_use_double_quant=double_quant)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        del model
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, quantization_config=bnb,
                                                     attn_implementation=attn, device_map="cpu")
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if dtype_mode in PREPARED:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
        elif checkpointing:
            model.gradient_checkpointing_enable()
    lc = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear", bias="none",
                    task_type="CAUSAL_LM")
    model = get_peft_model(model, lc)
    return family, cfg, model, {"r": rank, "use_dora": False, "target_modules": "all-linear"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--regimes", nargs="+", default=REGIMES)
    ap.add_argument("--shapes", nargs="+", default=["2x64", "4x128"], help="BATCHxSEQ")
    ap.add_argument("--dtype-modes", nargs="+", default=list(DTYPE_MODES), choices=list(DTYPE_MODES))
    ap.add_argument("--attn", nargs="+", default=["eager", "sdpa"])
    ap.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    # transformers' deprecation notices (`gradient_checkpointing_enable`) and torch's reminder to
    # pass `use_reentrant`: peft's `prepare_model_for_kbit_training` passes no kwargs, so the
    # prepared records checkpoint with torch's default, reentrant (see README.md).
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="torch.utils.checkpoint: the use_reentrant")
    # bitsandbytes' CPU backend warns once that the optional `kernels` package (an inference-only
    # fused gemv) is missing; training does not use it.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    records, t0 = [], time.time()
    for m, reg, attn, dm, b, s, ckpt in mp.grid(args):
        r = mp.measure_peak(m, reg, b, s, dm, attn, ckpt, build=build_qlora)
        r["quantization"] = quantization(reg, dm)
        records.append(r)
        mp.log_record(r, t0)
    mp.write_records(args.out, records)


if __name__ == "__main__":
    main()
