"""Reference parameter counts from transformers + peft, for ftbudget's fixture tests.

Every model is built from a config object on the meta device (nothing is downloaded, no tensor
memory is allocated), wrapped with `peft.get_peft_model`, and the counts of
`PeftModel.get_nb_trainable_parameters()` are written next to the ftbudget regime spec that
should reproduce them. Run it with the command in README.md; CI does not run it.
"""

import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    Phi3Config,
    Qwen2Config,
)

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100)
NO_TOKENS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)

# name -> (config class, kwargs, full grid?). The real models use their published configs.
MODELS = {
    "llama-tiny-gqa": (LlamaConfig, dict(TINY, num_key_value_heads=2, **NO_TOKENS), True),
    "llama-tiny-bias-tied": (
        LlamaConfig,
        dict(TINY, num_key_value_heads=1, head_dim=24, attention_bias=True, mlp_bias=True,
             tie_word_embeddings=True, **NO_TOKENS),
        True,
    ),
    "mistral-tiny": (MistralConfig, dict(TINY, num_key_value_heads=2, head_dim=None, **NO_TOKENS), True),
    "qwen2-tiny": (Qwen2Config, dict(TINY, num_key_value_heads=2, **NO_TOKENS), True),
    "qwen2-tiny-tied": (Qwen2Config, dict(TINY, num_key_value_heads=4, tie_word_embeddings=True, **NO_TOKENS), True),
    "gemma-tiny": (GemmaConfig, dict(TINY, num_key_value_heads=1, head_dim=32, **NO_TOKENS), True),
    "gemma-tiny-bias": (GemmaConfig, dict(TINY, num_key_value_heads=2, head_dim=8, attention_bias=True, **NO_TOKENS), True),
    "phi3-tiny": (Phi3Config, dict(TINY, num_key_value_heads=2, **NO_TOKENS), True),
    "phi3-tiny-mha": (Phi3Config, dict(TINY, **NO_TOKENS), True),
    "mixtral-tiny": (MixtralConfig, dict(TINY, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, **NO_TOKENS), True),
    "gpt2-tiny": (GPT2Config, dict(n_embd=64, n_layer=2, n_head=4, n_inner=96, vocab_size=100, n_positions=32, **NO_TOKENS), True),
    "gpt2-tiny-untied": (GPT2Config, dict(n_embd=48, n_layer=3, n_head=3, vocab_size=70, n_positions=16, tie_word_embeddings=False, **NO_TOKENS), True),
    # Published models (configs as on the Hub, fields that change counts only).
    "gpt2": (GPT2Config, dict(), False),
    "gpt2-xl": (GPT2Config, dict(n_embd=1600, n_layer=48, n_head=25), False),
    "llama-2-7b": (LlamaConfig, dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096), False),
    "llama-2-13b": (LlamaConfig, dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40, vocab_size=32000, max_position_embeddings=4096), False),
    "llama-2-70b": (LlamaConfig, dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096), False),
    "llama-3-8b": (LlamaConfig, dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192), False),
    "llama-3.1-70b": (LlamaConfig, dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072), False),
    "mistral-7b": (MistralConfig, dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768), False),
    "qwen2-7b": (Qwen2Config, dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, max_position_embeddings=131072), False),
    "gemma-2b": (GemmaConfig, dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=256000), False),
    "phi-3-mini": (Phi3Config, dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096), False),
    "mixtral-8x7b": (MixtralConfig, dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=32768), False),
}

LLAMA_ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_MLP = ["gate_proj", "up_proj", "down_proj"]

# model_type -> list of (ftbudget targets=, peft target_modules). The first is the "qv" choice.
TARGETS = {
    "llama": [("q_proj+v_proj", ["q_proj", "v_proj"]), ("attn", LLAMA_ATTN), ("mlp", LLAMA_MLP),
              ("all-linear", "all-linear"), ("k_proj+o_proj+down_proj", ["k_proj", "o_proj", "down_proj"])],
    "phi3": [("qkv_proj", ["qkv_proj"]), ("attn", ["qkv_proj", "o_proj"]), ("mlp", ["gate_up_proj", "down_proj"]),
             ("all-linear", "all-linear"), ("o_proj+gate_up_proj", ["o_proj", "gate_up_proj"])],
    "mixtral": [("q_proj+v_proj", ["q_proj", "v_proj"]), ("attn", LLAMA_ATTN), ("mlp", ["w1", "w2", "w3"]),
                ("all-linear", "all-linear"), ("gate", ["gate"]), ("w2", ["w2"]), ("w1+w3", ["w1", "w3"]),
                ("q_proj+gate+w2", ["q_proj", "gate", "w2"]), ("w1", ["w1"]), ("gate_up_proj", ["gate_up_proj"])],
    "gpt2": [("c_attn", ["c_attn"]), ("attn", r".*\.attn\.(c_attn|c_proj)"), ("mlp", r".*\.mlp\.(c_fc|c_proj)"),
             ("all-linear", "all-linear"), ("c_attn+c_proj", ["c_attn", "c_proj"]), ("c_fc", ["c_fc"])],
}
for t in ("mistral", "qwen2", "gemma"):
    TARGETS[t] = TARGETS["llama"]


def grid(model_type, full):
    """(targets index, r, bias, dora, modules_to_save, lora_bias) combinations."""
    n = len(TARGETS[model_type])
    out = []
    if full:
        for r in (1, 2, 4, 8, 16, 32, 64):
            out.append((0, r, "none", False, None, False))
        for t in range(1, n):
            out.append((t, 8, "none", False, None, False))
        for r in (3, 16, 64):
            out.append((3, r, "none", False, None, False))
        for bias in ("all", "lora_only"):
            out.append((3, 8, bias, False, None, False))
            out.append((0, 8, bias, False, None, False))
        out += [
            (0, 8, "none", True, None, False),
            (1, 16, "none", True, None, False),
            (2, 4, "none", True, None, False),
            (3, 8, "none", True, None, False),
            (3, 64, "none", True, None, False),
            (3, 8, "all", True, None, False),
            (0, 8, "none", False, ["lm_head"], False),
            (3, 16, "none", True, ["lm_head"], False),
            (3, 8, "lora_only", False, ["lm_head"], True),
            (0, 8, "none", False, None, True),
            (3, 4, "none", False, None, True),
            (3, 4, "none", True, None, True),
        ]
    else:
        out += [
            (0, 8, "none", False, None, False),
            (1, 16, "none", False, None, False),
            (3, 16, "none", False, None, False),
            (3, 64, "none", False, None, False),
            (3, 8, "all", False, None, False),
            (0, 8, "none", True, None, False),
            (3, 8, "none", True, None, False),
            (0, 8, "none", False, ["lm_head"], False),
        ]
    return out


def regime_spec(targets, r, bias, dora, mts, lora_bias):
    parts = [f"r={r}"]
    if targets != "all-linear":
        parts.append(f"targets={targets}")
    if bias != "none":
        parts.append(f"bias={bias}")
    if mts:
        parts.append("modules_to_save=" + "+".join(mts))
    if lora_bias:
        parts.append("lora_bias=true")
    return ("dora:" if dora else "lora:") + ",".join(parts)


def build(cls, kwargs):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cls(**kwargs))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "peft"))
    parser.add_argument("--only", help="comma-separated model names")
    args = parser.parse_args()
    torch.manual_seed(0)
    os.makedirs(os.path.join(args.out, "configs"), exist_ok=True)
    names = args.only.split(",") if args.only else list(MODELS)
    records = []
    for name in names:
        cls, kwargs, full = MODELS[name]
        config = cls(**kwargs)
        with open(os.path.join(args.out, "configs", f"{name}.json"), "w") as f:
            f.write(config.to_json_string(use_diff=False))
        model_type = config.model_type
        base = build(cls, kwargs).num_parameters()
        for t, r, bias, dora, mts, lora_bias in grid(model_type, full):
            targets, peft_targets = TARGETS[model_type][t]
            spec = regime_spec(targets, r, bias, dora, mts, lora_bias)
            record = {
                "id": f"{name}|{spec}",
                "model": name,
                "model_type": model_type,
                "regime": spec,
                "peft": {"r": r, "target_modules": peft_targets, "bias": bias, "use_dora": dora,
                         "modules_to_save": mts, "lora_bias": lora_bias},
                "base_params": base,
            }
            model = build(cls, kwargs)
            try:
                lora = LoraConfig(r=r, lora_alpha=16, lora_dropout=0.0, target_modules=peft_targets, bias=bias,
                                  use_dora=dora, modules_to_save=mts, lora_bias=lora_bias, task_type="CAUSAL_LM")
                pm = get_peft_model(model, lora)
                trainable, all_params = pm.get_nb_trainable_parameters()
                record["trainable"] = trainable
                record["all_params"] = all_params
            except Exception as e:  # peft refuses the combination: ftbudget must refuse it too
                record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            records.append(record)
            print(record["id"], record.get("trainable", record.get("error")), file=sys.stderr)
    out = {
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
        "records": records,
    }
    with open(os.path.join(args.out, "generated_counts.json"), "w") as f:
        json.dump(out, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
