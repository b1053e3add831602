"""Reference counts, module inventories and published totals for the decoder families of issue 9.

Every model is built from a config object on the meta device (nothing is downloaded, no tensor
memory is allocated). For each model of `FAMILIES` and each setting of its grid, the model is
wrapped with `peft.get_peft_model` and `PeftModel.get_nb_trainable_parameters()` is recorded next
to the ftbudget regime spec that expresses the same settings (or peft's refusal, first line).

Outputs (under fixtures/peft/, see README.md beside this file):
- families_counts.json: the records;
- families-configs/<model>.json: each config as users have it on disk (`use_diff=False`);
- families-inventory/<model>.json: every parameter, buffer and parametrized leaf module of the
  tiny models (`--inventory`);
- families_published.json: `num_parameters()` of each published preset next to the figure its
  model card publishes (`--published`).
"""

import argparse
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText  # noqa: E402

NO_TOKENS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=100, max_position_embeddings=64, **NO_TOKENS)


def tiny(**kw):
    out = dict(TINY)
    out.update(kw)
    return out


# ---------------------------------------------------------------------------------------------
# Target choices per family: (label, ftbudget targets= value, peft target_modules, extra LoraConfig
# kwargs). The first four are qv, attention list, MLP list, all-linear; the last is a name that
# matches nothing (peft refuses it). Explicit lists are written as `a+b+c` in the regime spec.

LLAMA_ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_MLP = ["gate_proj", "up_proj", "down_proj"]
NOMATCH = ("nomatch", "nonexistent_proj", ["nonexistent_proj"], {})


def std_targets(attn=LLAMA_ATTN, mlp=LLAMA_MLP, qv=("q_proj", "v_proj"), extra=()):
    qv = list(qv)
    # some names match, one does not: peft accepts the list
    partial = ("partial", "+".join(qv + ["nonexistent_proj"]), qv + ["nonexistent_proj"], {})
    return [("qv", "+".join(qv), qv, {}), ("attn", "+".join(attn), list(attn), {}),
            ("mlp", "+".join(mlp), list(mlp), {}), ("all-linear", "all-linear", "all-linear", {})] + list(extra) + [
                partial, NOMATCH]


def tp(label, modules, params):
    """A choice with peft's `target_parameters` (fused experts): spec `target_parameters=a+b`."""
    return (label, "+".join(modules) if modules else None, list(modules) if modules else None,
            {"target_parameters": list(params)})


LLAMA_T = std_targets()
TARGETS = {
    "llama": LLAMA_T,
    "qwen3": LLAMA_T, "olmo2": LLAMA_T, "granite": LLAMA_T, "smollm3": LLAMA_T, "cohere": LLAMA_T,
    "cohere2": LLAMA_T, "stablelm": LLAMA_T, "ministral": LLAMA_T, "exaone": LLAMA_T, "ernie4_5": LLAMA_T,
    "mistral": LLAMA_T, "gemma2": LLAMA_T, "gemma3_text": LLAMA_T, "exaone4": LLAMA_T, "ministral3": LLAMA_T,
    "qwen3_moe": std_targets(extra=[
        ("gate", "gate", ["gate"], {}),
        ("gate_proj+up_proj", "gate_proj+up_proj", ["gate_proj", "up_proj"], {}),
        ("gate_proj", "gate_proj", ["gate_proj"], {}),
        ("down_proj", "down_proj", ["down_proj"], {}),
        tp("qv+experts-params", ["q_proj", "v_proj"], ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]),
    ]),
    "qwen2_moe": std_targets(extra=[
        ("gate", "gate", ["gate"], {}),
        ("shared_expert_gate", "shared_expert_gate", ["shared_expert_gate"], {}),
        ("gate_proj+up_proj", "gate_proj+up_proj", ["gate_proj", "up_proj"], {}),
        ("down_proj", "down_proj", ["down_proj"], {}),
    ]),
    "deepseek_v3": std_targets(
        attn=["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"],
        qv=("q_b_proj", "kv_b_proj"),
        extra=[("gate", "gate", ["gate"], {}),
               ("down_proj", "down_proj", ["down_proj"], {}),
               ("q_a_proj+kv_a_proj_with_mqa", "q_a_proj+kv_a_proj_with_mqa", ["q_a_proj", "kv_a_proj_with_mqa"], {})]),
    "deepseek_v3_noq": std_targets(
        attn=["q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"], qv=("q_proj", "kv_b_proj"),
        extra=[("gate", "gate", ["gate"], {}), ("q_a_proj", "q_a_proj", ["q_a_proj"], {})]),
    "gpt_oss": std_targets(extra=[
        ("router", "router", ["router"], {}),
        ("experts", "experts", ["experts"], {}),
        ("gate_up_proj", "gate_up_proj", ["gate_up_proj"], {}),
        tp("gate_up_proj-param", [], ["mlp.experts.gate_up_proj"]),
        tp("qv+experts-params", ["q_proj", "v_proj"], ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]),
        tp("qv+router-param", ["q_proj", "v_proj"], ["mlp.router.weight"]),
        tp("all-linear+experts-params", "all-linear", ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]),
    ]),
    "granitemoe": std_targets(extra=[
        ("router", "router", ["router"], {}),
        ("input_linear+output_linear", "input_linear+output_linear", ["input_linear", "output_linear"], {}),
        tp("router-param", [], ["block_sparse_moe.router.weight"]),
        tp("qv+experts-params", ["q_proj", "v_proj"],
           ["block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.experts.down_proj"]),
    ]),
    "glm4": std_targets(mlp=["gate_up_proj", "down_proj"]),
    "glm": std_targets(mlp=["gate_up_proj", "down_proj"]),
    "phi": std_targets(attn=["q_proj", "k_proj", "v_proj", "dense"], mlp=["fc1", "fc2"]),
    "falcon": std_targets(attn=["query_key_value", "dense"], mlp=["dense_h_to_4h", "dense_4h_to_h"],
                          qv=("query_key_value",)),
    "gpt_neox": std_targets(attn=["query_key_value", "dense"], mlp=["dense_h_to_4h", "dense_4h_to_h"],
                            qv=("query_key_value",)),
    "starcoder2": std_targets(mlp=["c_fc", "c_proj"]),
    "gpt_bigcode": std_targets(attn=["c_attn", "c_proj"], mlp=["c_fc", "c_proj"], qv=("c_attn",)),
    "olmo": LLAMA_T, "olmo3": LLAMA_T, "seed_oss": LLAMA_T, "hunyuan_v1_dense": LLAMA_T,
    "arcee": std_targets(mlp=["up_proj", "down_proj"]),
}
# GLM-4.5 and OLMoE: peft converts their expert names like qwen3_moe's.
TARGETS["glm4_moe"] = TARGETS["qwen3_moe"]
TARGETS["olmoe"] = TARGETS["qwen3_moe"]
# Fused-expert families without peft's name conversion: the MLP choice is `target_parameters`.
TARGETS["gpt_oss"][2] = tp("mlp", [], ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
TARGETS["granitemoe"][2] = tp("mlp", [], ["block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.experts.down_proj"])
# Fix the all-linear choice of the `target_parameters`+all-linear extra (a string, not a list).
for _i, _c in enumerate(TARGETS["gpt_oss"]):
    if _c[0] == "all-linear+experts-params":
        TARGETS["gpt_oss"][_i] = (_c[0], "all-linear", "all-linear", _c[3])

# ---------------------------------------------------------------------------------------------
# Models: name -> dict(type=model_type, kw=config kwargs, full=full grid?, targets=TARGETS key,
# mm=multimodal (text_config nested)). Published configs copy the fields of the real config.json.

FAMILIES = {
    # qwen3: qk norm, explicit head_dim; tied variant with attention bias
    "qwen3-tiny": dict(type="qwen3", kw=tiny(head_dim=16, tie_word_embeddings=False), full=True),
    "qwen3-tiny-tied-bias": dict(type="qwen3", kw=tiny(head_dim=24, num_key_value_heads=1, tie_word_embeddings=True,
                                                       attention_bias=True), full=True),
    # qwen3_moe: 3 layers, layer 1 dense (mlp_only_layers)
    "qwen3_moe-tiny": dict(type="qwen3_moe", kw=tiny(num_hidden_layers=3, head_dim=16, num_experts=4, num_experts_per_tok=2,
                                                     moe_intermediate_size=32, mlp_only_layers=[1], norm_topk_prob=True),
                           full=True),
    # qwen2_moe: shared expert + gate, qkv bias, dense layer 0 via decoder_sparse_step=... (mlp_only_layers)
    "qwen2_moe-tiny": dict(type="qwen2_moe", kw=tiny(num_hidden_layers=3, num_experts=4, num_experts_per_tok=2,
                                                     moe_intermediate_size=32, shared_expert_intermediate_size=48,
                                                     mlp_only_layers=[0]), full=True),
    # gemma2: 4 norms per block, soft-capping, sliding window, tied, head_dim != hidden/heads
    "gemma2-tiny": dict(type="gemma2", kw=tiny(head_dim=16, sliding_window=16, query_pre_attn_scalar=16), full=True),
    "gemma2-tiny-bias": dict(type="gemma2", kw=tiny(head_dim=16, attention_bias=True, tie_word_embeddings=False,
                                                    sliding_window=16, query_pre_attn_scalar=16), full=True),
    # gemma3_text: qk norm, 5:1 sliding pattern, 3 layers
    "gemma3_text-tiny": dict(type="gemma3_text", kw=tiny(num_hidden_layers=3, head_dim=16, sliding_window=16,
                                                         query_pre_attn_scalar=16,
                                                         layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
                             full=True),
    # gpt_oss: biases everywhere, sinks, router with bias, fused experts with biases
    "gpt_oss-tiny": dict(type="gpt_oss", kw=tiny(head_dim=16, num_local_experts=4, num_experts_per_tok=2, intermediate_size=32,
                                                 sliding_window=16), full=True),
    # deepseek_v3: MLA with q_lora_rank, first layer dense, shared expert
    "deepseek_v3-tiny": dict(type="deepseek_v3", kw=tiny(num_hidden_layers=3, num_key_value_heads=4, first_k_dense_replace=1,
                                                         n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
                                                         moe_intermediate_size=32, q_lora_rank=32, kv_lora_rank=16,
                                                         qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
                                                         n_group=2, topk_group=1), full=True),
    # the DeepSeek-V2-Lite shape: q_lora_rank null (a plain q_proj), 2 shared experts
    "deepseek_v3-tiny-noqlora": dict(type="deepseek_v3", kw=tiny(num_hidden_layers=3, num_key_value_heads=4, first_k_dense_replace=2,
                                                                 n_routed_experts=4, n_shared_experts=2, num_experts_per_tok=2,
                                                                 moe_intermediate_size=32, q_lora_rank=None, kv_lora_rank=16,
                                                                 qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                                                                 n_group=1, topk_group=1), full=True, targets="deepseek_v3_noq"),
    # olmo2: q/k norm over the whole projection, post-norms only
    "olmo2-tiny": dict(type="olmo2", kw=tiny(), full=True),
    "granite-tiny": dict(type="granite", kw=tiny(attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                                                 embedding_multiplier=12.0, logits_scaling=8.0), full=True),
    "granitemoe-tiny": dict(type="granitemoe", kw=tiny(num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=True),
                            full=True),
    "smollm3-tiny": dict(type="smollm3", kw=tiny(num_hidden_layers=4, no_rope_layer_interval=4), full=True),
    "glm4-tiny": dict(type="glm4", kw=tiny(head_dim=16, partial_rotary_factor=0.5), full=True),
    "cohere-tiny": dict(type="cohere", kw=tiny(), full=True),
    "cohere-tiny-qknorm": dict(type="cohere", kw=tiny(use_qk_norm=True, attention_bias=True), full=True),
    "cohere2-tiny": dict(type="cohere2", kw=tiny(num_hidden_layers=4, head_dim=16, sliding_window=16), full=True),
    "phi-tiny": dict(type="phi", kw=tiny(partial_rotary_factor=0.5), full=True),
    "phi-tiny-qkln": dict(type="phi", kw=tiny(num_key_value_heads=4, qk_layernorm=True, tie_word_embeddings=True), full=True),
    # falcon: the 7B layout (old decoder, multi_query, parallel_attn), the 40B/180B layout (new
    # decoder architecture with num_kv_heads), multi-head with biases, sequential attention+MLP
    "falcon-tiny-mq": dict(type="falcon", kw=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=100,
                                                 max_position_embeddings=64, **NO_TOKENS), full=True),
    "falcon-tiny-newdec": dict(type="falcon", kw=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                                                     new_decoder_architecture=True, vocab_size=100,
                                                     max_position_embeddings=64, **NO_TOKENS), full=True),
    "falcon-tiny-mha-bias-seq": dict(type="falcon", kw=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                           multi_query=False, parallel_attn=False, bias=True,
                                                           tie_word_embeddings=False, ffn_hidden_size=96, vocab_size=100,
                                                           max_position_embeddings=64, **NO_TOKENS), full=True),
    "falcon-tiny-newdec-1ln": dict(type="falcon", kw=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                         num_kv_heads=2, new_decoder_architecture=True,
                                                         num_ln_in_parallel_attn=1, vocab_size=100,
                                                         max_position_embeddings=64, **NO_TOKENS), full=True),
    "gpt_neox-tiny": dict(type="gpt_neox", kw=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                   num_attention_heads=4, vocab_size=100, rotary_pct=0.25,
                                                   max_position_embeddings=64, **NO_TOKENS), full=True),
    "starcoder2-tiny": dict(type="starcoder2", kw=tiny(sliding_window=16), full=True),
    "stablelm-tiny": dict(type="stablelm", kw=tiny(use_qkv_bias=True, qk_layernorm=True, partial_rotary_factor=0.25,
                                                   use_parallel_residual=True), full=True),
    "stablelm-tiny-seq": dict(type="stablelm", kw=tiny(partial_rotary_factor=0.25), full=True),
    "ministral-tiny": dict(type="ministral", kw=tiny(head_dim=16, sliding_window=16), full=True),
    "exaone-tiny": dict(type="exaone", kw=tiny(head_dim=16, tie_word_embeddings=True), full=True),
    "ernie4_5-tiny": dict(type="ernie4_5", kw=tiny(head_dim=16, use_bias=True), full=True),
    # neighbours of the list: EXAONE 4 (q/k norm, post-norms only, hybrid attention),
    # Ministral 3 (the text tower of Ministral-3 2512), GLM (GLM-4 before 0414: fused gate_up_proj)
    "exaone4-tiny": dict(type="exaone4", kw=tiny(num_hidden_layers=4, head_dim=16, sliding_window=16,
                                                 sliding_window_pattern=4), full=True),
    "ministral3-tiny": dict(type="ministral3", kw=tiny(head_dim=16), full=True),
    "glm-tiny": dict(type="glm", kw=tiny(head_dim=16, partial_rotary_factor=0.5), full=True),
    # more decoder families (issue 9 follow-up)
    # glm4_moe: first layer dense, shared expert, biased q/k/v, q/k norm, partial rotary
    "glm4_moe-tiny": dict(type="glm4_moe", kw=tiny(num_hidden_layers=3, head_dim=16, first_k_dense_replace=1,
                                                   n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
                                                   moe_intermediate_size=32, attention_bias=True, use_qk_norm=True,
                                                   n_group=1, topk_group=1), full=True),
    # the GLM-4.5-Air-like variant: no q/k norm, no attention bias, two shared experts, 2 dense layers
    "glm4_moe-tiny-plain": dict(type="glm4_moe", kw=tiny(num_hidden_layers=3, first_k_dense_replace=2,
                                                         n_routed_experts=4, n_shared_experts=2, num_experts_per_tok=2,
                                                         moe_intermediate_size=24, n_group=1, topk_group=1,
                                                         tie_word_embeddings=True), full=True),
    # olmoe: q/k norm over all heads, experts of intermediate_size in every layer
    "olmoe-tiny": dict(type="olmoe", kw=tiny(num_experts=4, num_experts_per_tok=2), full=True),
    "olmoe-tiny-bias": dict(type="olmoe", kw=tiny(num_experts=4, num_experts_per_tok=2, attention_bias=True,
                                                  num_key_value_heads=4), full=True),
    # olmo (OLMo 1): parameter-free LayerNorms; a variant with attention bias and clip_qkv
    "olmo-tiny": dict(type="olmo", kw=tiny(), full=True),
    "olmo-tiny-bias": dict(type="olmo", kw=tiny(attention_bias=True, clip_qkv=8.0, tie_word_embeddings=True), full=True),
    "olmo3-tiny": dict(type="olmo3", kw=tiny(num_hidden_layers=4, sliding_window=16), full=True),
    "seed_oss-tiny": dict(type="seed_oss", kw=tiny(head_dim=16, attention_bias=True, attention_out_bias=True,
                                                   mlp_bias=True), full=True),
    "arcee-tiny": dict(type="arcee", kw=tiny(), full=True),
    # gpt_bigcode: multi-query (the StarCoder/SantaCoder layout), and multi-head untied
    "gpt_bigcode-tiny-mq": dict(type="gpt_bigcode", kw=dict(n_embd=64, n_layer=2, n_head=4, n_inner=96, vocab_size=100,
                                                           n_positions=64, **NO_TOKENS), full=True),
    "gpt_bigcode-tiny-mha": dict(type="gpt_bigcode", kw=dict(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64,
                                                            multi_query=False, tie_word_embeddings=False, **NO_TOKENS),
                                 full=True),
    "hunyuan_v1_dense-tiny": dict(type="hunyuan_v1_dense", kw=tiny(head_dim=16, attention_bias=True), full=True),
}


def add_multimodal():
    """Configs nesting the language model under text_config (vision towers kept tiny)."""
    FAMILIES["gemma3-mm-tiny"] = dict(type="gemma3", mm=True, full=True, targets="gemma3_text", kw=dict(
        text_config=dict(tiny(num_hidden_layers=2, head_dim=16, sliding_window=16, query_pre_attn_scalar=16,
                              vocab_size=300)),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14, vision_use_head=False),
        mm_tokens_per_image=4, image_token_index=299, boi_token_index=297, eoi_token_index=298, **NO_TOKENS))
    FAMILIES["mistral3-mm-tiny"] = dict(type="mistral3", mm=True, full=True, targets="mistral", kw=dict(
        text_config=dict(tiny(head_dim=16, model_type="mistral", sliding_window=None)),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14, head_dim=16, model_type="pixtral"),
        image_token_index=99, spatial_merge_size=2))
    FAMILIES["llava-mm-tiny"] = dict(type="llava", mm=True, full=True, targets="llama", kw=dict(
        text_config=dict(tiny(model_type="llama")),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                           image_size=28, patch_size=14, projection_dim=16, model_type="clip_vision_model"),
        image_token_index=99, vision_feature_layer=-2))

    # Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE: their language models (no causal-LM class
    # in transformers 5.24: the whole model without `model.visual`)
    qwen_vision = dict(depth=1, hidden_size=32, embed_dim=32, intermediate_size=48, num_heads=2, out_hidden_size=64)
    FAMILIES["qwen2_vl-mm-tiny"] = dict(type="qwen2_vl", mm=True, full=True, targets="llama", kw=dict(
        text_config=tiny(vocab_size=300), vision_config=dict(qwen_vision, mlp_ratio=2), **NO_TOKENS))
    FAMILIES["qwen2_5_vl-mm-tiny"] = dict(type="qwen2_5_vl", mm=True, full=True, targets="llama", kw=dict(
        text_config=tiny(vocab_size=300, tie_word_embeddings=True), vision_config=dict(qwen_vision, fullatt_block_indexes=[0]),
        tie_word_embeddings=True, **NO_TOKENS))
    FAMILIES["qwen3_vl-mm-tiny"] = dict(type="qwen3_vl", mm=True, full=True, targets="qwen3", kw=dict(
        text_config=tiny(vocab_size=300, head_dim=16), vision_config=dict(qwen_vision, deepstack_visual_indexes=[0]),
        **NO_TOKENS))
    FAMILIES["qwen3_vl_moe-mm-tiny"] = dict(type="qwen3_vl_moe", mm=True, full=True, targets="qwen3_moe", kw=dict(
        text_config=tiny(vocab_size=300, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                         tie_word_embeddings=False),
        vision_config=dict(qwen_vision, deepstack_visual_indexes=[0]), tie_word_embeddings=False, **NO_TOKENS))


add_multimodal()


# ---------------------------------------------------------------------------------------------


def grid(choices, full, has_bias):
    """(choice index, r, bias, dora, modules_to_save, lora_bias) combinations."""
    labels = [c[0] for c in choices]
    qv, attn, mlp, al = 0, 1, 2, 3
    extras = [i for i, lab in enumerate(labels) if i > 3 and lab != "nomatch"]
    nomatch = labels.index("nomatch")
    out = []
    if full:
        for r in (1, 8, 16):
            out.append((qv, r, "none", False, None, False))
            out.append((al, r, "none", False, None, False))
        out.append((attn, 8, "none", False, None, False))
        out.append((mlp, 8, "none", False, None, False))
        out.append((attn, 16, "none", False, None, False))
        out.append((mlp, 16, "none", False, None, False))
        for i in extras:
            out.append((i, 8, "none", False, None, False))
            out.append((i, 8, "none", True, None, False))
        if has_bias:
            for bias in ("all", "lora_only"):
                out.append((al, 8, bias, False, None, False))
                out.append((qv, 8, bias, False, None, False))
                out.append((mlp, 8, bias, False, None, False))
            out.append((al, 8, "all", True, None, False))
        out += [
            (qv, 8, "none", True, None, False),
            (attn, 8, "none", True, None, False),
            (mlp, 8, "none", True, None, False),
            (al, 8, "none", True, None, False),
            (al, 16, "none", True, None, False),
            (qv, 8, "none", False, ["lm_head"], False),
            (al, 8, "none", False, ["lm_head"], False),
            (al, 8, "none", True, ["lm_head"], False),
            (qv, 8, "none", False, None, True),
            (al, 8, "none", False, None, True),
            (mlp, 8, "none", False, None, True),
            (al, 8, "none", True, None, True),
            (nomatch, 8, "none", False, None, False),
        ]
    else:
        out += [
            (qv, 8, "none", False, None, False),
            (al, 16, "none", False, None, False),
            (al, 8, "none", True, None, False),
        ]
    return out


def regime_spec(targets, r, bias, dora, mts, lora_bias, target_parameters=None):
    parts = [f"r={r}"]
    if target_parameters and targets in (None, "all-linear"):
        # peft's target_parameters alone (`targets=none`) or with all-linear: written out
        parts.append(f"targets={targets or 'none'}")
    elif targets != "all-linear":
        parts.append(f"targets={targets}")
    if target_parameters:
        parts.append("target_parameters=" + "+".join(target_parameters))
    if bias != "none":
        parts.append(f"bias={bias}")
    if mts:
        parts.append("modules_to_save=" + "+".join(mts))
    if lora_bias:
        parts.append("lora_bias=true")
    return ("dora:" if dora else "lora:") + ",".join(parts)


def make_config(entry):
    return AutoConfig.for_model(entry["type"], **entry["kw"])


def build(config, part="causal"):
    """part: `causal` (AutoModelForCausalLM), `full` (the multimodal model), `lm` (its text_config)."""
    with torch.device("meta"):
        if part == "full":
            return AutoModelForImageTextToText.from_config(config)
        if part == "lm":
            try:
                return AutoModelForCausalLM.from_config(config.text_config)
            except ValueError:
                # No causal-LM class for this text config (Qwen2/2.5/3-VL): the whole model
                # without its vision tower, i.e. the language model and its lm_head.
                model = AutoModelForImageTextToText.from_config(config)
                model.model.visual = torch.nn.Module()
                return model
        return AutoModelForCausalLM.from_config(config)


def first_line(e):
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}" if str(e).strip() else type(e).__name__


def trainable_by_module(pm):
    """Trainable elements (count and tensor shapes) grouped by what holds them: `<module>.lora_A`,
    `<module>.lora_B`, `.lora_magnitude_vector` (DoRA), `modules_to_save` copies and biases, with
    paths relative to the base model."""
    out = {}
    for n, p in pm.named_parameters():
        if not p.requires_grad:
            continue
        n = n.removeprefix("base_model.model.")
        if ".lora_" in n:
            head, tail = n.split(".lora_", 1)
            key = head + ".lora_" + tail.split(".")[0]
        else:
            key = n.replace(".default.", ".")
        rec = out.setdefault(key, {"numel": 0, "shapes": []})
        rec["numel"] += p.numel()
        rec["shapes"].append(list(p.shape))
    return out


def count_records(name, entry, config, part):
    model_type = config.model_type
    key = entry.get("targets", model_type)
    choices = TARGETS[key]
    base_model = build(config, part)
    base = base_model.num_parameters()
    has_bias = any(n.endswith(".bias") for n, _ in base_model.named_parameters()
                   if "norm" not in n and "ln" not in n.split(".")[-2])
    del base_model
    records = []
    for t, r, bias, dora, mts, lora_bias in grid(choices, entry["full"], has_bias):
        label, targets, peft_targets, extra = choices[t]
        spec = regime_spec(targets, r, bias, dora, mts, lora_bias, extra.get("target_parameters"))
        rid = f"{name}|{spec}" + ("" if part == "causal" else f"|{part}")
        record = {
            "id": rid, "model": name, "model_type": model_type, "part": part, "choice": label,
            "regime": spec,
            "peft": {"r": r, "target_modules": peft_targets, "bias": bias, "use_dora": dora,
                     "modules_to_save": mts, "lora_bias": lora_bias, **extra},
            "base_params": base,
        }
        model = build(config, part)
        try:
            lora = LoraConfig(r=r, lora_alpha=16, lora_dropout=0.0, target_modules=peft_targets, bias=bias,
                              use_dora=dora, modules_to_save=mts, lora_bias=lora_bias, task_type="CAUSAL_LM", **extra)
            pm = get_peft_model(model, lora)
            trainable, all_params = pm.get_nb_trainable_parameters()
            record["trainable"] = trainable
            record["all_params"] = all_params
            resolved = pm.peft_config["default"]
            tm = resolved.target_modules
            record["peft_resolved"] = {
                "target_modules": sorted(tm) if isinstance(tm, (set, list)) else tm,
                "target_parameters": sorted(resolved.target_parameters or []),
                "rank_pattern": dict(resolved.rank_pattern or {}),
                "alpha_pattern": dict(resolved.alpha_pattern or {}),
            }
            if entry["full"]:
                record["trainable_by_module"] = trainable_by_module(pm)
        except Exception as e:  # peft refuses the combination: ftbudget must refuse it too
            record["error"] = first_line(e)
        records.append(record)
        print(record["id"], record.get("trainable", record.get("error")), file=sys.stderr, flush=True)
    return records


# ---------------------------------------------------------------------------------------------
# Inventory


def inventory(model):
    params = [{"name": n, "shape": list(p.shape), "dtype": str(p.dtype).replace("torch.", "")}
              for n, p in model.named_parameters(remove_duplicate=False)]
    unique = {n for n, _ in model.named_parameters()}
    for p in params:
        if p["name"] not in unique:
            p["shared"] = True
    buffers = []
    for mname, mod in model.named_modules(remove_duplicate=False):
        for bname, b in mod.named_buffers(recurse=False):
            if b is None:
                continue
            buffers.append({"name": f"{mname}.{bname}" if mname else bname, "shape": list(b.shape),
                            "dtype": str(b.dtype).replace("torch.", ""),
                            "persistent": bname not in mod._non_persistent_buffers_set})
    modules = []
    for mname, mod in model.named_modules():
        own = list(mod.named_parameters(recurse=False))
        if not own:
            continue
        bases = [c.__module__ + "." + c.__name__ for c in type(mod).__mro__
                 if c.__module__.startswith("torch.nn") and c is not torch.nn.Module]
        modules.append({"name": mname, "class": type(mod).__name__, "torch_base": bases[0] if bases else None,
                        "is_linear": isinstance(mod, torch.nn.Linear),
                        "params": {n: list(p.shape) for n, p in own},
                        **({"in_features": mod.in_features, "out_features": mod.out_features}
                           if isinstance(mod, torch.nn.Linear) else {})})
    return {"class": type(model).__name__, "num_parameters": model.num_parameters(),
            "parameters": params, "buffers": buffers, "modules_with_parameters": modules}


def write_inventory(out_dir, name, entry, config):
    os.makedirs(out_dir, exist_ok=True)
    inv = {"model": name, "model_type": config.model_type}
    if entry.get("mm"):
        inv["language_model"] = inventory(build(config, "lm"))
        inv["full"] = inventory(build(config, "full"))
    else:
        inv.update(inventory(build(config, "causal")))
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(inv, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------------------------------------


def versions():
    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    root = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "peft")
    parser.add_argument("--out", default=root)
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--inventory", action="store_true", help="write the tiny models' inventories")
    parser.add_argument("--no-counts", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: replace those models' records in families_counts.json")
    parser.add_argument("--published", action="store_true", help="write families_published.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    import published  # the published presets (configs copied from the real config.json files)
    models = dict(FAMILIES)
    models.update(published.PUBLISHED_FAMILIES)
    names = args.only.split(",") if args.only else list(models)
    cfg_dir = os.path.join(args.out, "families-configs")
    os.makedirs(cfg_dir, exist_ok=True)
    records = []
    t0 = time.time()
    for name in names:
        entry = models[name]
        config = make_config(entry)
        with open(os.path.join(cfg_dir, f"{name}.json"), "w") as f:
            f.write(config.to_json_string(use_diff=False))
        if args.inventory and entry["full"]:
            write_inventory(os.path.join(args.out, "families-inventory"), name, entry, config)
        if not args.no_counts:
            parts = ["lm", "full"] if entry.get("mm") else ["causal"]
            for part in parts:
                records += count_records(name, entry, config, part)
        print(f"{name}: {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    if not args.no_counts and args.only and args.merge:
        path = os.path.join(args.out, "families_counts.json")
        with open(path) as f:
            old = json.load(f)["records"]
        fresh = {}
        for r in records:
            fresh.setdefault(r["model"], []).append(r)
        merged, done = [], set()
        for r in old:
            if r["model"] in fresh:
                if r["model"] not in done:
                    merged += fresh[r["model"]]
                    done.add(r["model"])
            else:
                merged.append(r)
        merged += [r for m, rs in fresh.items() if m not in done for r in rs]
        with open(path, "w") as f:
            json.dump({"versions": versions(), "records": merged}, f, indent=0)
            f.write("\n")
    elif not args.no_counts:
        path = os.path.join(args.out, "families_counts.json" if not args.only else "families_counts.partial.json")
        with open(path, "w") as f:
            json.dump({"versions": versions(), "records": records}, f, indent=0)
            f.write("\n")
    if args.published:
        published.write(os.path.join(args.out, "families_published.json"), build, make_config, versions())


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
