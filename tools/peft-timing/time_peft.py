"""Time peft's get_nb_trainable_parameters() on a meta-device Llama-2-7B with LoRA r=8 on
q_proj+v_proj, the answer ftbudget's `counts/llama-2-7b/lora-r8-qv` benchmark computes.

Prints one JSON object on stdout. Nothing is downloaded: the model is built from a config object
under torch.device("meta"), so no weights are allocated.
"""

import json
import platform
import sys
import time
import timeit

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    torch.set_num_threads(1)
    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        tie_word_embeddings=False,
    )
    start = time.perf_counter()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    build_seconds = time.perf_counter() - start
    trainable, all_params = model.get_nb_trainable_parameters()
    timer = timeit.Timer(model.get_nb_trainable_parameters)
    # Best of 5 rounds of `repeats` calls, per call.
    per_call = min(timer.repeat(repeat=5, number=repeats)) / repeats
    print(
        json.dumps(
            {
                "what": "PeftModel.get_nb_trainable_parameters()",
                "model": "llama-2-7b (meta device)",
                "lora": "r=8, target_modules=q_proj,v_proj",
                "trainable": trainable,
                "all_params": all_params,
                "seconds_per_call": per_call,
                "calls_per_round": repeats,
                "rounds": 5,
                "statistic": "best round, divided by calls",
                "build_seconds": build_seconds,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
