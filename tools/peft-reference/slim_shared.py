"""Copy the shared peft fixture subset into fixtures/peft/, slimmed to the fields the tests use.

Usage: python3 tools/peft-reference/slim_shared.py /work/shared/fixtures
Each record keeps its id, model, counts and the ftbudget regime spec equivalent to its LoraConfig;
the full config.json of every model is copied to fixtures/peft/shared-configs/.
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
from generate import regime_spec  # noqa: E402  (the same spec text as the generator writes)


def targets(record):
    label = record["lora"]["target_label"]
    gpt2 = record["model_family"] == "gpt2"
    if label == "qv":
        return "c_attn" if gpt2 else "q_proj+v_proj"
    if label.startswith("list:"):
        return label[len("list:"):].replace(",", "+")
    return label


def main():
    src = sys.argv[1]
    out = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "peft")
    shutil.copytree(os.path.join(src, "configs"), os.path.join(out, "shared-configs"), dirs_exist_ok=True)
    records = []
    for r in json.load(open(os.path.join(src, "peft_counts.json"))):
        lora = r["lora"]
        spec = regime_spec(targets(r), lora["r"], lora["bias"], lora["use_dora"], lora["modules_to_save"],
                           lora["lora_bias"])
        records.append({"id": r["id"], "model": r["model"], "regime": spec, "trainable": r["trainable"],
                        "all_params": r["all_params"], "base_params": r["base_params"]})
    with open(os.path.join(out, "shared_counts.json"), "w") as f:
        json.dump({"source": "shared/fixtures/peft_counts.json", "records": records}, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
