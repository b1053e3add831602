"""Bytes a QLoRA forward saves for backward, by LoRA targets (saved-tensor hooks, CPU, one step).

llama-h64-l2-v2048 loaded in NF4 (bitsandbytes 0.50.2, compute dtype bf16) from its saved
config-built weights in bf16, prepared with `prepare_model_for_kbit_training` (no
checkpointing), LoRA r8 on the given targets, one forward under bf16 autocast at batch 2 x 64
with sdpa: the sum of the distinct storages autograd packs that are not parameters (what
ftbudget's activation bucket plus autocast's weight casts count).
`crates/measurements/tests/qlora_targets.rs` holds ftbudget to the printed totals:

    /opt/pyref/bin/python tools/measure-peak/saved_qlora_targets.py all-linear q_proj+v_proj
"""
import sys
import tempfile

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

import measure_peak as mp


def saved_bytes(targets):
    torch.manual_seed(0)
    family, cfg, model = mp.measure.build("llama-h64-l2-v2048", "sdpa")
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                             bnb_4bit_compute_dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        del model
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, quantization_config=bnb,
                                                     attn_implementation="sdpa", device_map="cpu")
    model.train()
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    modules = targets if targets == "all-linear" else targets.split("+")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=modules, lora_dropout=0.0))
    ids = torch.randint(0, cfg.vocab_size, (2, 64))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids)
    return sum(seen.values())


if __name__ == "__main__":
    torch.set_num_threads(1)
    for t in sys.argv[1:]:
        print(t, saved_bytes(t), flush=True)
