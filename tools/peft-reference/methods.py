"""Reference counts for the PEFT methods beyond LoRA (issue 14), from peft itself.

Every model is built from a committed config.json on the meta device (nothing is downloaded, no
tensor memory is allocated), wrapped with `peft.get_peft_model` under one method's config, and
`PeftModel.get_nb_trainable_parameters()` is recorded next to the ftbudget regime spec that
expresses the same settings, or peft's refusal (first line of the error). Tiny models also get
every trainable tensor with its shape, and every buffer the method adds.

Writes fixtures/peft/methods_counts.json, with peft's default target modules per model type for
each method (`defaults`), read from `peft.utils.constants`.

    /opt/pyref/bin/python tools/peft-reference/methods.py            # ~1 min
"""

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import peft  # noqa: E402
import peft.utils.constants as constants  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import (AdaLoraConfig, BOFTConfig, FourierFTConfig, IA3Config, LNTuningConfig, LoHaConfig,  # noqa: E402
                  LoKrConfig, OFTConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig,
                  TrainableTokensConfig, VeraConfig, get_peft_model)
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "fixtures", "peft")

# model name -> (config path under fixtures/peft, tiny?)
MODELS = {
    "llama-tiny-gqa": ("configs/llama-tiny-gqa.json", True),
    "gpt2-tiny": ("configs/gpt2-tiny.json", True),
    "qwen3-tiny": ("families-configs/qwen3-tiny.json", True),
    "gemma-tiny": ("configs/gemma-tiny.json", True),
    "llama-2-7b": ("configs/llama-2-7b.json", False),
    "qwen3-8b": ("families-configs/qwen3-8b.json", False),
}

CL = dict(task_type="CAUSAL_LM")


def lst(s):
    return s.split("+")


def grid(model_type):
    """(ftbudget spec, peft config factory) for one model type."""
    gpt2 = model_type == "gpt2"
    qv = "c_attn" if gpt2 else "q_proj+v_proj"
    alll = "all-linear"
    ff = "mlp.c_proj" if gpt2 else "down_proj"
    ia3_t = "c_attn+mlp.c_proj" if gpt2 else "q_proj+v_proj+down_proj"
    emb = "wte" if gpt2 else "embed_tokens"
    g = [
        ("ia3", lambda: IA3Config(**CL)),
        (f"ia3:targets={ia3_t},feedforward={ff}",
         lambda: IA3Config(target_modules=lst(ia3_t), feedforward_modules=[ff], **CL)),
        (f"ia3:targets={qv},feedforward=", lambda: IA3Config(target_modules=lst(qv), feedforward_modules=[], **CL)),
        (f"ia3:targets={alll},feedforward={ff}",
         lambda: IA3Config(target_modules=alll, feedforward_modules=[ff], **CL)),
        ("vera", lambda: VeraConfig(**CL)),
        (f"vera:r=256,targets={qv}", lambda: VeraConfig(r=256, target_modules=lst(qv), **CL)),
        (f"vera:r=16,targets={alll}", lambda: VeraConfig(r=16, target_modules=alll, **CL)),
        (f"loha:r=8,alpha=8,targets={qv}", lambda: LoHaConfig(r=8, alpha=8, target_modules=lst(qv), **CL)),
        (f"loha:r=4,alpha=8,targets={alll}", lambda: LoHaConfig(r=4, alpha=8, target_modules=alll, **CL)),
        ("loha", lambda: LoHaConfig(**CL)),
        (f"lokr:r=8,alpha=8,targets={qv}", lambda: LoKrConfig(r=8, alpha=8, target_modules=lst(qv), **CL)),
        (f"lokr:r=8,alpha=8,decompose_both=true,targets={qv}",
         lambda: LoKrConfig(r=8, alpha=8, decompose_both=True, target_modules=lst(qv), **CL)),
        (f"lokr:r=8,alpha=8,targets={alll}", lambda: LoKrConfig(r=8, alpha=8, target_modules=alll, **CL)),
        (f"lokr:r=2,alpha=8,decompose_both=true,decompose_factor=4,targets={alll}",
         lambda: LoKrConfig(r=2, alpha=8, decompose_both=True, decompose_factor=4, target_modules=alll, **CL)),
        (f"lokr:r=8,alpha=8,decompose_factor=8,targets={alll}",
         lambda: LoKrConfig(r=8, alpha=8, decompose_factor=8, target_modules=alll, **CL)),
        ("lokr", lambda: LoKrConfig(**CL)),
        (f"adalora:init_r=12,target_r=8,targets={qv}",
         lambda: AdaLoraConfig(init_r=12, target_r=8, total_step=1000, target_modules=lst(qv), **CL)),
        (f"adalora:init_r=12,target_r=8,targets={alll}",
         lambda: AdaLoraConfig(init_r=12, target_r=8, total_step=1000, target_modules=alll, **CL)),
        ("adalora", lambda: AdaLoraConfig(total_step=1000, **CL)),
        (f"oft:r=8,block_size=0,targets={qv}",
         lambda: OFTConfig(r=8, oft_block_size=0, target_modules=lst(qv), **CL)),
        (f"oft:block_size=32,targets={qv}", lambda: OFTConfig(r=0, oft_block_size=32, target_modules=lst(qv), **CL)),
        (f"oft:block_size=16,targets={alll}",
         lambda: OFTConfig(r=0, oft_block_size=16, target_modules=alll, **CL)),
        ("oft", lambda: OFTConfig(**CL)),
        (f"oft:block_size=5,targets={qv}", lambda: OFTConfig(r=0, oft_block_size=5, target_modules=lst(qv), **CL)),
        (f"boft:block_size=4,n_butterfly_factor=2,targets={qv}",
         lambda: BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=2, target_modules=lst(qv), **CL)),
        (f"boft:block_size=8,n_butterfly_factor=1,targets={alll}",
         lambda: BOFTConfig(boft_block_size=8, boft_n_butterfly_factor=1, target_modules=alll, **CL)),
        (f"boft:block_size=0,block_num=8,n_butterfly_factor=2,targets={qv}",
         lambda: BOFTConfig(boft_block_size=0, boft_block_num=8, boft_n_butterfly_factor=2, target_modules=lst(qv),
                            **CL)),
        ("boft", lambda: BOFTConfig(**CL)),
        (f"fourierft:n_frequency=1000,targets={qv}",
         lambda: FourierFTConfig(n_frequency=1000, target_modules=lst(qv), **CL)),
        (f"fourierft:n_frequency=100,targets={alll}",
         lambda: FourierFTConfig(n_frequency=100, target_modules=alll, **CL)),
        ("fourierft", lambda: FourierFTConfig(**CL)),
        ("ln-tuning", lambda: LNTuningConfig(**CL)),
        ("prompt-tuning:virtual_tokens=20", lambda: PromptTuningConfig(num_virtual_tokens=20, **CL)),
        ("prompt-tuning:virtual_tokens=8", lambda: PromptTuningConfig(num_virtual_tokens=8, **CL)),
        ("prefix-tuning:virtual_tokens=30", lambda: PrefixTuningConfig(num_virtual_tokens=30, **CL)),
        ("prefix-tuning:virtual_tokens=30,projection=512",
         lambda: PrefixTuningConfig(num_virtual_tokens=30, prefix_projection=True, encoder_hidden_size=512, **CL)),
        ("p-tuning:virtual_tokens=20,encoder_hidden=256",
         lambda: PromptEncoderConfig(num_virtual_tokens=20, encoder_hidden_size=256, **CL)),
        ("p-tuning:virtual_tokens=20,encoder_hidden=256,encoder_type=lstm",
         lambda: PromptEncoderConfig(num_virtual_tokens=20, encoder_hidden_size=256, encoder_reparameterization_type="LSTM",
                                     **CL)),
        (f"trainable-tokens:targets={emb},tokens=0+1+2",
         lambda: TrainableTokensConfig(target_modules=[emb], token_indices=[0, 1, 2], **CL)),
    ]
    return g


def build(config_path, tiny):
    """Tiny models are built on the CPU, as users run peft; published ones on the meta device."""
    with open(os.path.join(FIXTURES, config_path)) as f:
        raw = json.load(f)
    config = AutoConfig.for_model(**raw)
    with torch.device("cpu" if tiny else "meta"):
        return AutoModelForCausalLM.from_config(config), config


def defaults():
    out = {}
    for method, name in [("ia3", "IA3"), ("ia3-feedforward", None), ("vera", "VERA"), ("loha", "LOHA"),
                         ("lokr", "LOKR"), ("adalora", "ADALORA"), ("oft", "OFT"), ("boft", "BOFT"),
                         ("fourierft", "FOURIERFT"), ("ln-tuning", "LNTUNING")]:
        if name is None:
            mapping = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
        else:
            mapping = getattr(constants, f"TRANSFORMERS_MODELS_TO_{name}_TARGET_MODULES_MAPPING")
        out[method] = {k: (v if isinstance(v, str) else list(v)) for k, v in sorted(mapping.items())}
    return out


def arange_randperm(n, *args, **kwargs):
    """FourierFT draws `randperm(in x out)` per module for its frequency locations: seconds per
    module on a 7B model. The counts do not depend on the locations: an arange stands in."""
    return torch.arange(n)


def main():
    torch.manual_seed(0)
    import peft.tuners.fourierft.layer as fourierft_layer

    class TorchWithArangePermutation:
        randperm = staticmethod(arange_randperm)

        def __getattr__(self, name):
            return getattr(torch, name)

    fourierft_layer.torch = TorchWithArangePermutation()
    only = sys.argv[1].split(",") if len(sys.argv) > 1 else list(MODELS)
    out_path = os.path.join(FIXTURES, "methods_counts.json")
    records = []
    if len(sys.argv) > 1 and os.path.exists(out_path):  # merge: replace only these models' records
        with open(out_path) as f:
            records = [r for r in json.load(f)["records"] if r["model"] not in only]
    for name in only:
        path, tiny = MODELS[name]
        base_model, config = build(path, tiny)
        base = base_model.num_parameters()
        base_buffers = {n for n, _ in base_model.named_buffers()}
        for spec, make in grid(config.model_type):
            if not tiny and spec.startswith("boft:block_size=8"):
                continue  # BOFT's dense (in x in) permutation buffers for every module: tens of GB on CPU
            record = {"id": f"{name}|{spec}", "model": name, "model_type": config.model_type, "config": path,
                      "regime": spec, "base_params": base}
            model, _ = build(path, tiny)
            try:
                cfg = make()
                record["peft"] = {k: (sorted(v) if isinstance(v, set) else v)
                                  for k, v in cfg.to_dict().items()
                                  if k not in ("peft_type", "task_type", "revision", "base_model_name_or_path",
                                               "inference_mode", "auto_mapping", "peft_version")}
                pm = get_peft_model(model, cfg)
                trainable, all_params = pm.get_nb_trainable_parameters()
                record["trainable"] = trainable
                record["all_params"] = all_params
                # AdaLoRA's `ranknum` is created with requires_grad=False, but peft's move of the
                # adapter to the base layer's device re-creates it trainable on the meta device
                # only (a tiny model gives 4 more trainable on meta than on the CPU).
                ranknum = sum(p.numel() for n, p in pm.named_parameters() if ".ranknum." in n and p.requires_grad)
                if ranknum and not tiny:
                    record["trainable_on_device"] = trainable - ranknum
                    record["note"] = "meta device: peft leaves AdaLoRA's ranknum trainable; on a device it is frozen"
                if tiny:
                    record["trainable_tensors"] = {n: list(p.shape) for n, p in pm.named_parameters() if p.requires_grad}
                    record["added_buffers"] = {n: [list(b.shape), str(b.dtype)] for n, b in pm.named_buffers()
                                               if n.split("base_model.model.", 1)[-1] not in base_buffers
                                               and "rotary_emb" not in n}
            except Exception as e:  # peft refuses: ftbudget must refuse too
                record["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
            records.append(record)
            print(record["id"], record.get("trainable", record.get("error")), file=sys.stderr)
    out = {
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
        "defaults": defaults(),
        "records": records,
    }
    order = list(MODELS)
    out["records"].sort(key=lambda r: order.index(r["model"]))
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
