"""peft records for recipes, layers_to_transform and rank_pattern, and bitsandbytes LLM.int8 bytes.

Writes
- fixtures/peft/recipes_counts.json: one record per case: the model config used (a file of
  fixtures/peft/configs or families-configs), the LoraConfig arguments, and peft's
  get_nb_trainable_parameters(). Cases named after a recipe of fixtures/recipes/ mirror that
  recipe by hand (the tool's own rule for its targets), independently of ftbudget's mapping.
- fixtures/recipes/peft/*.json: adapter_config.json files written by LoraConfig.save_pretrained,
  with their counts in the same records (`recipe`).
- fixtures/peft/int8_bytes.json: bytes of bitsandbytes Int8Params (int8 weight + SCB) on CPU.

Run: /opt/pyref/bin/python tools/peft-reference/recipes.py   (meta device, nothing downloaded)
"""

import json
import os
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEFT = os.path.join(ROOT, "fixtures", "peft")

LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TORCHTUNE = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# (id, config folder, config name, LoraConfig kwargs, recipe file or None)
CASES = [
    # layers_to_transform and rank_pattern on a tiny llama and on Llama-3-8B.
    ("llama-tiny-gqa|layers=0", "configs", "llama-tiny-gqa", dict(r=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[0]), None),
    ("llama-tiny-gqa|layers=1", "configs", "llama-tiny-gqa", dict(r=4, target_modules=LLAMA_ALL, layers_to_transform=[1]), None),
    ("llama-tiny-gqa|layers=0+1,lm_head", "configs", "llama-tiny-gqa", dict(r=4, target_modules=["q_proj", "lm_head"], layers_to_transform=[0, 1]), None),
    ("llama-tiny-gqa|rank_pattern", "configs", "llama-tiny-gqa", dict(r=8, target_modules=LLAMA_ALL, rank_pattern={"q_proj": 16, "v_proj": 4}), None),
    ("llama-tiny-gqa|rank_pattern layer", "configs", "llama-tiny-gqa", dict(r=8, target_modules=["q_proj", "v_proj"], rank_pattern={"layers.0.self_attn.q_proj": 32}), None),
    ("llama-tiny-gqa|dora layers", "configs", "llama-tiny-gqa", dict(r=8, target_modules=["q_proj", "o_proj"], layers_to_transform=[1], use_dora=True), None),
    ("llama-3-8b|layers=0+1+2", "configs", "llama-3-8b", dict(r=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1, 2]), None),
    ("llama-3-8b|rank_pattern", "configs", "llama-3-8b", dict(r=16, target_modules="all-linear", rank_pattern={"down_proj": 64, "layers.31.mlp.up_proj": 2}), None),
    ("llama-3-8b|layers+rank_pattern+modules_to_save", "configs", "llama-3-8b", dict(r=8, target_modules=LLAMA_ALL, layers_to_transform=list(range(24, 32)), rank_pattern={"o_proj": 32}, modules_to_save=["lm_head"]), None),
    # Recipes of fixtures/recipes/, their peft configuration written by hand from the recipe.
    # axolotl lora_target_linear: every Linear name but lm_head (loaders/adapter.py).
    ("axolotl/llama-3_lora-8b.yml", "configs", "llama-3-8b", dict(r=32, target_modules=LLAMA_ALL, modules_to_save=["embed_tokens", "lm_head"]), "axolotl/llama-3_lora-8b.yml"),
    ("axolotl/llama-3_instruct-lora-8b.yml", "configs", "llama-3-8b", dict(r=32, target_modules=LLAMA_ALL), "axolotl/llama-3_instruct-lora-8b.yml"),
    ("axolotl/llama-3_qlora.yml", "configs", "llama-3-8b", dict(r=32, target_modules=LLAMA_ALL), "axolotl/llama-3_qlora.yml"),
    ("axolotl/llama-2_lora.yml", "configs", "llama-2-7b", dict(r=32, target_modules=LLAMA_ALL), "axolotl/llama-2_lora.yml"),
    ("axolotl/mistral_lora.yml", "configs", "mistral-7b", dict(r=32, target_modules=LLAMA_ALL), "axolotl/mistral_lora.yml"),
    ("axolotl/mistral_qlora.yml", "configs", "mistral-7b", dict(r=32, target_modules=LLAMA_ALL), "axolotl/mistral_qlora.yml"),
    ("axolotl/llama-3_lora-1b.yml", "families-configs", "llama-3.2-1b", dict(r=16, target_modules=LLAMA_ALL), "axolotl/llama-3_lora-1b.yml"),
    # LLaMA-Factory lora_target all: every Linear but the output layer (model/model_utils/misc.py).
    ("llama-factory/train_lora_qwen3_lora_sft.yaml", "families-configs", "qwen3-4b", dict(r=8, target_modules=LLAMA_ALL), "llama-factory/train_lora_qwen3_lora_sft.yaml"),
    ("llama-factory/train_lora_qwen3_lora_pretrain.yaml", "families-configs", "qwen3-4b", dict(r=8, target_modules=LLAMA_ALL), "llama-factory/train_lora_qwen3_lora_pretrain.yaml"),
    ("llama-factory/train_lora_qwen3_lora_sft_ds3.yaml", "families-configs", "qwen3-4b", dict(r=8, target_modules=LLAMA_ALL), "llama-factory/train_lora_qwen3_lora_sft_ds3.yaml"),
    ("llama-factory/train_qlora_qwen3_lora_sft_otfq.yaml", "families-configs", "qwen3-4b", dict(r=8, target_modules=LLAMA_ALL), "llama-factory/train_qlora_qwen3_lora_sft_otfq.yaml"),
    ("llama-factory/extras_fsdp_qlora_llama3_lora_sft.yaml", "configs", "llama-3-8b", dict(r=8, target_modules=LLAMA_ALL), "llama-factory/extras_fsdp_qlora_llama3_lora_sft.yaml"),
    ("llama-factory/extras_loraplus_llama3_lora_sft.yaml", "configs", "llama-3-8b", dict(r=8, target_modules=LLAMA_ALL), "llama-factory/extras_loraplus_llama3_lora_sft.yaml"),
    ("llama-factory/extras_pissa_llama3_lora_sft.yaml", "configs", "llama-3-8b", dict(r=8, target_modules=LLAMA_ALL), "llama-factory/extras_pissa_llama3_lora_sft.yaml"),
    # torchtune: lora_attn_modules (output_proj = o_proj), apply_lora_to_mlp, apply_lora_to_output.
    ("torchtune/llama3_8B_lora_single_device.yaml", "configs", "llama-3-8b", dict(r=8, target_modules=TORCHTUNE), "torchtune/llama3_8B_lora_single_device.yaml"),
    ("torchtune/llama3_1_8B_lora_single_device.yaml", "configs", "llama-3-8b", dict(r=8, target_modules=TORCHTUNE), "torchtune/llama3_1_8B_lora_single_device.yaml"),
    ("torchtune/llama3_8B_qlora_single_device.yaml", "configs", "llama-3-8b", dict(r=8, target_modules=TORCHTUNE), "torchtune/llama3_8B_qlora_single_device.yaml"),
    ("torchtune/llama3_8B_dora_single_device.yaml", "configs", "llama-3-8b", dict(r=8, target_modules=TORCHTUNE, use_dora=True), "torchtune/llama3_8B_dora_single_device.yaml"),
    ("torchtune/llama2_7B_lora_single_device.yaml", "configs", "llama-2-7b", dict(r=8, target_modules=TORCHTUNE), "torchtune/llama2_7B_lora_single_device.yaml"),
    ("torchtune/mistral_7B_lora_single_device.yaml", "configs", "mistral-7b", dict(r=64, target_modules=TORCHTUNE + ["lm_head"]), "torchtune/mistral_7B_lora_single_device.yaml"),
    ("torchtune/gemma_2B_lora_single_device.yaml", "configs", "gemma-2b", dict(r=64, target_modules=TORCHTUNE), "torchtune/gemma_2B_lora_single_device.yaml"),
]

# adapter_config.json files to write: (file, config folder, config name, Hub id, kwargs)
ADAPTERS = [
    ("llama-3-8b_qv_r16.json", "configs", "llama-3-8b", "meta-llama/Meta-Llama-3-8B", dict(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])),
    ("llama-3-8b_all-linear_r64.json", "configs", "llama-3-8b", "meta-llama/Meta-Llama-3-8B", dict(r=64, target_modules="all-linear", modules_to_save=["lm_head"])),
    ("llama-2-7b_layers.json", "configs", "llama-2-7b", "meta-llama/Llama-2-7b-hf", dict(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], layers_to_transform=[28, 29, 30, 31], layers_pattern="layers")),
    ("mistral-7b_rank_pattern.json", "configs", "mistral-7b", "mistralai/Mistral-7B-v0.1", dict(r=8, target_modules=LLAMA_ALL, rank_pattern={"down_proj": 32, "layers.0.self_attn.q_proj": 64}, alpha_pattern={"down_proj": 64})),
    ("qwen2-7b_dora_bias.json", "configs", "qwen2-7b", "Qwen/Qwen2-7B", dict(r=16, target_modules=["q_proj", "k_proj", "v_proj"], use_dora=True, bias="all")),
    ("gemma-2b_lora_only.json", "configs", "gemma-2b", "google/gemma-2b", dict(r=4, target_modules=["q_proj", "v_proj", "o_proj"], bias="lora_only")),
    ("llama-3.2-1b_layers_int.json", "families-configs", "llama-3.2-1b", "meta-llama/Llama-3.2-1B", dict(r=32, target_modules=LLAMA_ALL, layers_to_transform=0)),
    ("qwen3-4b_lora_bias.json", "families-configs", "qwen3-4b", "Qwen/Qwen3-4B", dict(r=8, target_modules=LLAMA_ALL, lora_bias=True)),
]


def build(folder, name):
    with open(os.path.join(PEFT, folder, f"{name}.json")) as f:
        cfg = json.load(f)
    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def count(folder, name, kwargs):
    model = build(folder, name)
    base = model.num_parameters()
    pm = get_peft_model(model, LoraConfig(**kwargs))
    trainable, all_params = pm.get_nb_trainable_parameters()
    return base, trainable, all_params


def int8_records():
    import bitsandbytes as bnb

    out = []
    for rows, cols in [(96, 64), (4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (7, 33)]:
        w = torch.randn(rows, cols, dtype=torch.float16)
        p = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        lin = bnb.nn.Linear8bitLt(cols, rows, bias=False, has_fp16_weights=False)
        lin.weight = p
        lin = lin.to("cpu")
        q = lin.weight
        nbytes = q.numel() * q.element_size() + q.SCB.numel() * q.SCB.element_size()
        out.append({"out": rows, "in": cols, "weight_dtype": str(q.dtype), "scb_dtype": str(q.SCB.dtype),
                    "scb_numel": q.SCB.numel(), "bytes": nbytes})
    return {"bitsandbytes": bnb.__version__, "records": out}


def main():
    records = []
    for cid, folder, name, kwargs, recipe in CASES:
        base, trainable, all_params = count(folder, name, kwargs)
        records.append({"id": cid, "configs": folder, "model": name, "peft": kwargs, "recipe": recipe,
                        "base_params": base, "trainable": trainable, "all_params": all_params})
        print(cid, trainable, all_params, file=sys.stderr)
    out_dir = os.path.join(ROOT, "fixtures", "recipes", "peft")
    os.makedirs(out_dir, exist_ok=True)
    for file, folder, name, hub_id, kwargs in ADAPTERS:
        config = LoraConfig(base_model_name_or_path=hub_id, task_type="CAUSAL_LM", **kwargs)
        with tempfile.TemporaryDirectory() as tmp:
            config.save_pretrained(tmp)
            with open(os.path.join(tmp, "adapter_config.json")) as f:
                text = f.read()
        with open(os.path.join(out_dir, file), "w") as f:
            f.write(text)
        base, trainable, all_params = count(folder, name, kwargs)
        records.append({"id": f"peft/{file}", "configs": folder, "model": name, "peft": kwargs,
                        "recipe": f"peft/{file}", "base_params": base, "trainable": trainable,
                        "all_params": all_params})
        print(file, trainable, all_params, file=sys.stderr)
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__}
    with open(os.path.join(PEFT, "recipes_counts.json"), "w") as f:
        json.dump({"versions": versions, "records": records}, f, indent=1)
        f.write("\n")
    with open(os.path.join(PEFT, "int8_bytes.json"), "w") as f:
        json.dump(int8_records(), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
