"""Record what torch.utils.flop_counter.FlopCounterMode counts for one training step.

One step is `model(input_ids, labels=input_ids)` then `loss.backward()` (the optimizer is left
out: it has no matmul). The forward and the backward are counted by two separate counters, so
the split is exact; with non-reentrant gradient checkpointing the recompute runs inside
`backward()` and is counted there. Real CPU tensors, tiny shapes, nothing downloaded.
Usage: see README.md beside this file.
"""
import argparse
import json
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

warnings.filterwarnings("ignore")

# name -> (model_type, config kwargs)
MODELS = {
    "llama-h64-l2-gqa": ("llama", dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                                       max_position_embeddings=128, tie_word_embeddings=False)),
    "llama-h96-l3-tied": ("llama", dict(hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                                        num_attention_heads=6, num_key_value_heads=6, vocab_size=384,
                                        max_position_embeddings=128, tie_word_embeddings=True)),
    "qwen3-h64-l2-qknorm": ("qwen3", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                          vocab_size=512, max_position_embeddings=128,
                                          tie_word_embeddings=False)),
    "gpt2-e64-l2": ("gpt2", dict(n_embd=64, n_layer=2, n_head=4, n_inner=256, vocab_size=320,
                                 n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "olmo2-h64-l2": ("olmo2", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                                   max_position_embeddings=128, tie_word_embeddings=False)),
    "gemma3_text-h64-l3": ("gemma3_text", dict(hidden_size=64, intermediate_size=192, num_hidden_layers=3,
                                               num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                               query_pre_attn_scalar=16, sliding_window=16,
                                               layer_types=["sliding_attention", "sliding_attention",
                                                            "full_attention"],
                                               vocab_size=512, max_position_embeddings=128)),
    "qwen3_moe-h64-l3-e4": ("qwen3_moe", dict(hidden_size=64, intermediate_size=192, moe_intermediate_size=48,
                                              num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                              head_dim=16, num_experts=4, num_experts_per_tok=2, mlp_only_layers=[1],
                                              norm_topk_prob=True, vocab_size=512, max_position_embeddings=128,
                                              tie_word_embeddings=False)),
    "mixtral-h64-l2-e4": ("mixtral", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                          num_experts_per_tok=2, vocab_size=256, max_position_embeddings=128,
                                          tie_word_embeddings=False, sliding_window=None)),
    "deepseek_v3-h64-l3-mla": ("deepseek_v3", dict(hidden_size=64, intermediate_size=192, moe_intermediate_size=48,
                                                   num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                                                   first_k_dense_replace=1, n_routed_experts=4, n_shared_experts=1,
                                                   num_experts_per_tok=2, n_group=2, topk_group=1, q_lora_rank=32,
                                                   kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8,
                                                   v_head_dim=16, vocab_size=512, max_position_embeddings=128,
                                                   tie_word_embeddings=False)),
}
MOE = {"qwen3_moe", "mixtral", "deepseek_v3"}
# peft's LoRA on q and v, by family (deepseek_v3's attention has no q_proj/v_proj when
# q_lora_rank is set: its inputs are q_a_proj and kv_a_proj_with_mqa)
QV_TARGETS = {"gpt2": ["c_attn"], "deepseek_v3": ["q_a_proj", "kv_a_proj_with_mqa"]}
# modules DoRA may adapt on MoE models (peft refuses DoRA on the fused experts' ParamWrapper)
DORA_MOE_TARGETS = {"qwen3_moe": ["q_proj", "k_proj", "v_proj", "o_proj"],
                    "mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],
                    "deepseek_v3": ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]}


def build(name, attn):
    family, kwargs = MODELS[name]
    cfg = AutoConfig.for_model(family, **kwargs)
    for k in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(cfg, k):
            setattr(cfg, k, 0.0)
    # transformers 5 runs fused experts through torch._grouped_mm by default, which FlopCounterMode
    # has no formula for (it counts 0): the eager loop (one F.linear per expert on its routed
    # tokens) is what the counter can see.
    extra = {"experts_implementation": "eager"} if family in MOE else {}
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, **extra)
    model.train()
    return family, cfg, model


def targets_for(family, regime):
    kind, _, tgt = regime.partition(":")
    if tgt == "qv":
        return QV_TARGETS.get(family, ["q_proj", "v_proj"])
    if kind == "dora" and family in MOE:
        return DORA_MOE_TARGETS[family]
    return "all-linear"


def apply_regime(family, model, regime, r):
    """`full`, `lora:all`, `lora:qv`, `dora:all`, `qlora:all` (bitsandbytes NF4 on CPU)."""
    if regime == "full":
        return model, None
    from peft import LoraConfig, get_peft_model
    kind = regime.split(":")[0]
    targets = targets_for(family, regime)
    if kind == "qlora":
        quantize_block_linears(model)
    lc = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets, bias="none",
                    use_dora=(kind == "dora"), task_type="CAUSAL_LM")
    model = get_peft_model(model, lc)
    return model, {"r": r, "use_dora": kind == "dora", "target_modules": targets,
                   "quantized": kind == "qlora"}


def quantize_block_linears(model):
    """Swap every Linear (and GPT-2 Conv1D) inside the blocks for a bitsandbytes NF4 Linear4bit
    (fp32 compute), as `load_in_4bit` does; the lm_head stays dense."""
    import bitsandbytes as bnb
    from transformers.pytorch_utils import Conv1D
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):  # GPT-2: weight [in, out], as transformers' bnb swap does
                weight, (n_in, n_out) = child.weight.data.t(), child.weight.shape
            elif isinstance(child, torch.nn.Linear) and child is not model.get_output_embeddings():
                weight, n_in, n_out = child.weight.data, child.in_features, child.out_features
            else:
                continue
            q = bnb.nn.Linear4bit(n_in, n_out, bias=child.bias is not None,
                                  compute_dtype=torch.float32, quant_type="nf4")
            q.weight = bnb.nn.Params4bit(weight.contiguous().clone(), requires_grad=False,
                                         quant_type="nf4").to("cpu")
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data.clone(), requires_grad=False)
            setattr(parent, child_name, q)
    for p in model.parameters():
        p.requires_grad_(False)


def config_json(cfg):
    """The full config as `config.json` would hold it (defaults included)."""
    return json.loads(cfg.to_json_string(use_diff=False))


def by_op(counter):
    return {str(k).replace("aten.", ""): int(v) for k, v in counter.get_flop_counts()["Global"].items()}


def measure(name, regime, r, batch, seq, attn, checkpointing):
    torch.manual_seed(0)
    family, cfg, model = build(name, attn)
    if checkpointing:
        # Before get_peft_model, as most recipes do: peft then calls enable_input_require_grads(),
        # so the embedding output requires grad even with a frozen embedding.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model, lora = apply_regime(family, model, regime, r)
    embed = model.get_input_embeddings()
    seen = {}

    def note_embedding_output(_module, _inputs, output):
        seen.setdefault("embed_out_requires_grad", output.requires_grad)  # returns None: output kept

    embed.register_forward_hook(note_embedding_output)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as fwd:
        out = model(input_ids=ids, labels=ids)
    with FlopCounterMode(display=False) as bwd:
        out.loss.backward()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "id": f"{name}/{regime}{'-r' + str(r) if regime != 'full' else ''}/{attn}/"
              f"{'ckpt' if checkpointing else 'nockpt'}/b{batch}s{seq}",
        "model": name,
        "model_type": family,
        "config": MODELS[name][1],
        "regime": regime.split(":")[0],
        "lora": lora,
        "attn_implementation": attn,
        "gradient_checkpointing": checkpointing,
        "batch": batch,
        "seq": seq,
        "embed_out_requires_grad": seen.get("embed_out_requires_grad"),
        "trainable_params": trainable,
        "forward_flops": fwd.get_total_flops(),
        "backward_flops": bwd.get_total_flops(),
        "step_flops": fwd.get_total_flops() + bwd.get_total_flops(),
        "forward_by_op": by_op(fwd),
        "backward_by_op": by_op(bwd),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--regimes", nargs="+", default=["full", "lora:all", "lora:qv", "dora:all", "qlora:all"])
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--shapes", nargs="+", default=["2x16", "1x40"])
    ap.add_argument("--attn", nargs="+", default=["eager", "sdpa"])
    ap.add_argument("--checkpointing", nargs="+", default=["off", "on"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    records, skipped = [], []
    t0 = time.time()
    for name in args.models:
        for regime in args.regimes:
            for attn in args.attn:
                for ck in args.checkpointing:
                    for shape in args.shapes:
                        b, s = (int(x) for x in shape.split("x"))
                        try:
                            records.append(measure(name, regime, args.rank, b, s, attn, ck == "on"))
                        except Exception as e:  # noqa: BLE001 -- recorded, not hidden
                            skipped.append({"model": name, "regime": regime, "attn": attn,
                                            "checkpointing": ck, "shape": shape,
                                            "error": f"{type(e).__name__}: {e}"[:300]})
        print(f"{name}: {len(records)} records, {len(skipped)} skipped, {time.time() - t0:.0f} s", flush=True)
    doc = {
        "tool": "tools/measure-flops/measure.py",
        "counter": "torch.utils.flop_counter.FlopCounterMode (display=False), forward and backward counted apart",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": __import__("peft").__version__,
                     "bitsandbytes": __import__("bitsandbytes").__version__},
        # the full config.json of every model measured (defaults included), once per model
        "models": {name: config_json(AutoConfig.for_model(MODELS[name][0], **MODELS[name][1]))
                   for name in args.models},
        "records": records,
        "skipped": skipped,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
