"""Published presets of issue 9: the count-changing fields of each model's config.json on the Hub,
and the parameter figure its model card publishes.

`PUBLISHED_FAMILIES` feeds families.py's small grid (name -> type, kw, full=False);
`CARDS` gives, per preset, the card URL and the figure the card (or the Hub page's safetensors
total, where the card only rounds) publishes. `write()` builds each preset on the meta device and
records `num_parameters()` next to that figure.
"""

import json

NOT_TIED = dict(tie_word_embeddings=False)

QWEN3 = dict(vocab_size=151936, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
             rms_norm_eps=1e-6, attention_bias=False)
GEMMA3_TEXT = dict(vocab_size=262208, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
                   rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=131072)
GPT_OSS = dict(vocab_size=201088, hidden_size=2880, intermediate_size=2880, head_dim=64, num_attention_heads=64,
               num_key_value_heads=8, num_experts_per_tok=4, sliding_window=128, attention_bias=True,
               max_position_embeddings=131072, tie_word_embeddings=False)
SIGLIP_896 = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                  image_size=896, patch_size=14, model_type="siglip_vision_model", vision_use_head=False)


def _gemma3_mm(text):
    return dict(text_config=dict(GEMMA3_TEXT, **text), vision_config=SIGLIP_896, mm_tokens_per_image=256,
                boi_token_index=255999, eoi_token_index=256000, image_token_index=262144)


PUBLISHED_FAMILIES = {
    "qwen3-0.6b": dict(type="qwen3", full=False, kw=dict(QWEN3, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                                         num_attention_heads=16, num_key_value_heads=8, tie_word_embeddings=True)),
    "qwen3-4b": dict(type="qwen3", full=False, kw=dict(QWEN3, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                                       num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True)),
    "qwen3-8b": dict(type="qwen3", full=False, kw=dict(QWEN3, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                                                       num_attention_heads=32, num_key_value_heads=8, **NOT_TIED)),
    "qwen3-14b": dict(type="qwen3", full=False, kw=dict(QWEN3, hidden_size=5120, intermediate_size=17408, num_hidden_layers=40,
                                                        num_attention_heads=40, num_key_value_heads=8, **NOT_TIED)),
    "qwen3-32b": dict(type="qwen3", full=False, kw=dict(QWEN3, hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
                                                        num_attention_heads=64, num_key_value_heads=8, **NOT_TIED)),
    "qwen3-30b-a3b": dict(type="qwen3_moe", full=False, kw=dict(QWEN3, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                                                                num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
                                                                num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                                                                decoder_sparse_step=1, mlp_only_layers=[], **NOT_TIED)),
    "qwen1.5-moe-a2.7b": dict(type="qwen2_moe", full=False, kw=dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632,
                                                                    moe_intermediate_size=1408, shared_expert_intermediate_size=5632,
                                                                    num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                                                                    num_experts=60, num_experts_per_tok=4, max_position_embeddings=8192,
                                                                    **NOT_TIED)),
    "gemma-2-9b": dict(type="gemma2", full=False, kw=dict(vocab_size=256000, hidden_size=3584, intermediate_size=14336,
                                                          num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8,
                                                          head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
                                                          attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                                                          max_position_embeddings=8192)),
    "gemma-3-1b": dict(type="gemma3_text", full=False, kw=dict(GEMMA3_TEXT, vocab_size=262144, hidden_size=1152, intermediate_size=6912,
                                                               num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
                                                               sliding_window=512, max_position_embeddings=32768)),
    "gemma-3-4b": dict(type="gemma3", mm=True, full=False, targets="gemma3_text", kw=_gemma3_mm(dict(
        hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4))),
    "gemma-3-12b": dict(type="gemma3", mm=True, full=False, targets="gemma3_text", kw=_gemma3_mm(dict(
        hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8))),
    "gemma-3-27b": dict(type="gemma3", mm=True, full=False, targets="gemma3_text", kw=_gemma3_mm(dict(
        hidden_size=5376, intermediate_size=21504, num_hidden_layers=62, num_attention_heads=32, num_key_value_heads=16,
        head_dim=128, query_pre_attn_scalar=168))),
    "gpt-oss-20b": dict(type="gpt_oss", full=False, kw=dict(GPT_OSS, num_hidden_layers=24, num_local_experts=32)),
    "gpt-oss-120b": dict(type="gpt_oss", full=False, kw=dict(GPT_OSS, num_hidden_layers=36, num_local_experts=128)),
    "deepseek-v3": dict(type="deepseek_v3", full=False, kw=dict(
        vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
        num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1, n_routed_experts=256, num_experts_per_tok=8,
        kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8,
        topk_group=4, first_k_dense_replace=3, routed_scaling_factor=2.5, norm_topk_prob=True,
        max_position_embeddings=163840, **NOT_TIED)),
    "olmo-2-7b": dict(type="olmo2", full=False, kw=dict(vocab_size=100352, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                                        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                                                        rms_norm_eps=1e-6, rope_theta=500000, **NOT_TIED)),
    "olmo-2-13b": dict(type="olmo2", full=False, kw=dict(vocab_size=100352, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                                                         num_attention_heads=40, num_key_value_heads=40, max_position_embeddings=4096,
                                                         rms_norm_eps=1e-6, rope_theta=500000, **NOT_TIED)),
    "smollm3-3b": dict(type="smollm3", full=False, kw=dict(vocab_size=128256, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                                           num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=65536,
                                                           tie_word_embeddings=True, rope_theta=5000000.0)),
    "llama-3.2-1b": dict(type="llama", full=False, kw=dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                                           num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                                           max_position_embeddings=131072, tie_word_embeddings=True)),
    "llama-3.2-3b": dict(type="llama", full=False, kw=dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                                           num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                                                           max_position_embeddings=131072, tie_word_embeddings=True)),
    "phi-2": dict(type="phi", full=False, kw=dict(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                                                  num_attention_heads=32, num_key_value_heads=32, partial_rotary_factor=0.4,
                                                  max_position_embeddings=2048, **NOT_TIED)),
    "falcon-7b": dict(type="falcon", full=False, kw=dict(vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
                                                         multi_query=True, parallel_attn=True, new_decoder_architecture=False,
                                                         bias=False, alibi=False)),
    "granite-3.1-8b": dict(type="granite", full=False, kw=dict(vocab_size=49155, hidden_size=4096, intermediate_size=12800, num_hidden_layers=40,
                                                               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                                                               tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
                                                               embedding_multiplier=12.0, logits_scaling=16.0, residual_multiplier=0.22,
                                                               attention_multiplier=0.0078125, rope_theta=10000000.0)),
    "granite-3.1-3b-a800m": dict(type="granitemoe", full=False, kw=dict(vocab_size=49155, hidden_size=1536, intermediate_size=512,
                                                                        num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8,
                                                                        num_local_experts=40, num_experts_per_tok=8,
                                                                        max_position_embeddings=131072, tie_word_embeddings=True)),
    "glm-4-9b-0414": dict(type="glm4", full=False, kw=dict(vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_hidden_layers=40,
                                                           num_attention_heads=32, num_key_value_heads=2, head_dim=128,
                                                           partial_rotary_factor=0.5, attention_bias=True, max_position_embeddings=32768,
                                                           **NOT_TIED)),
    "command-r-v01": dict(type="cohere", full=False, kw=dict(vocab_size=256000, hidden_size=8192, intermediate_size=22528,
                                                             num_hidden_layers=40, num_attention_heads=64, num_key_value_heads=64,
                                                             logit_scale=0.0625, use_qk_norm=False, tie_word_embeddings=True)),
    "command-r7b-12-2024": dict(type="cohere2", full=False, kw=dict(vocab_size=256000, hidden_size=4096, intermediate_size=14336,
                                                                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                                                    sliding_window=4096, logit_scale=0.25, tie_word_embeddings=True)),
    "pythia-1b": dict(type="gpt_neox", full=False, kw=dict(vocab_size=50304, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                                           num_attention_heads=8, rotary_pct=0.25, use_parallel_residual=True,
                                                           max_position_embeddings=2048, **NOT_TIED)),
    "starcoder2-3b": dict(type="starcoder2", full=False, kw=dict(vocab_size=49152, hidden_size=3072, intermediate_size=12288,
                                                                 num_hidden_layers=30, num_attention_heads=24, num_key_value_heads=2,
                                                                 sliding_window=4096, use_bias=True, max_position_embeddings=16384,
                                                                 tie_word_embeddings=True)),
    "stablelm-2-1.6b": dict(type="stablelm", full=False, kw=dict(vocab_size=100352, hidden_size=2048, intermediate_size=5632,
                                                                 num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                                                                 partial_rotary_factor=0.25, use_qkv_bias=True, qk_layernorm=False,
                                                                 use_parallel_residual=False, **NOT_TIED)),
    "ministral-8b-2410": dict(type="ministral", full=False, kw=dict(vocab_size=131072, hidden_size=4096, intermediate_size=12288,
                                                                    num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                                                                    head_dim=128, sliding_window=32768, max_position_embeddings=32768,
                                                                    **NOT_TIED)),
    "exaone-3.5-7.8b": dict(type="exaone", full=False, kw=dict(vocab_size=102400, hidden_size=4096, intermediate_size=14336,
                                                               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                                               max_position_embeddings=32768, **NOT_TIED)),
    "ernie-4.5-0.3b": dict(type="ernie4_5", full=False, kw=dict(vocab_size=103424, hidden_size=1024, intermediate_size=3072,
                                                                num_hidden_layers=18, num_attention_heads=16, num_key_value_heads=2,
                                                                head_dim=128, use_bias=False, tie_word_embeddings=True)),
    "mistral-small-3.1-24b": dict(type="mistral3", mm=True, full=False, targets="mistral", kw=dict(
        text_config=dict(model_type="mistral", vocab_size=131072, hidden_size=5120, intermediate_size=32768, num_hidden_layers=40,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, sliding_window=None,
                         max_position_embeddings=131072, **NOT_TIED),
        vision_config=dict(model_type="pixtral", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, head_dim=64, image_size=1540, patch_size=14),
        spatial_merge_size=2, image_token_index=10, multimodal_projector_bias=False, projector_hidden_act="gelu",
        vision_feature_layer=-1, tie_word_embeddings=False)),
    "llava-1.5-7b": dict(type="llava", mm=True, full=False, targets="llama", kw=dict(
        text_config=dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, **NOT_TIED),
        vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
        image_token_index=32000, vision_feature_layer=-2, projector_hidden_act="gelu")),
    # GLM-4.5 and GLM-4.5-Air: the config.json fields as NVIDIA-NeMo/Megatron-Bridge's
    # tests/unit_tests/models/glm/test_glm45_bridge.py spells them out (glm45_355b_config,
    # glm45_air_106b_config); the Air's also in ms-swift's dump of ZhipuAI/GLM-4.5-Air's Glm4MoeConfig.
    "glm-4.5-air": dict(type="glm4_moe", full=False, kw=dict(
        attention_bias=True, first_k_dense_replace=1, head_dim=128, hidden_size=4096, intermediate_size=10944,
        max_position_embeddings=131072, moe_intermediate_size=1408, n_group=1, topk_group=1, n_routed_experts=128,
        n_shared_experts=1, norm_topk_prob=True, num_attention_heads=96, num_experts_per_tok=8, num_hidden_layers=46,
        num_key_value_heads=8, partial_rotary_factor=0.5, routed_scaling_factor=1.0, use_qk_norm=False,
        vocab_size=151552, **NOT_TIED)),
    "glm-4.5": dict(type="glm4_moe", full=False, kw=dict(
        attention_bias=True, first_k_dense_replace=3, head_dim=128, hidden_size=5120, intermediate_size=12288,
        max_position_embeddings=131072, moe_intermediate_size=1536, n_routed_experts=160, n_shared_experts=1,
        num_attention_heads=96, num_experts_per_tok=8, num_hidden_layers=92, num_key_value_heads=8,
        partial_rotary_factor=0.5, routed_scaling_factor=2.5, use_qk_norm=True, vocab_size=151552, **NOT_TIED)),
    # OLMoE-1B-7B-0924: the fields of allenai/OLMoE-1B-7B-0924's config.json as two public test
    # fixtures spell them out (an MoE engine's OLMOE_1B_7B_HF_CONFIG and a results sheet's olmoe_config).
    "olmoe-1b-7b-0924": dict(type="olmoe", full=False, kw=dict(
        hidden_size=2048, intermediate_size=1024, num_hidden_layers=16, num_experts=64, num_experts_per_tok=8,
        num_attention_heads=16, num_key_value_heads=16, vocab_size=50304, norm_topk_prob=False, **NOT_TIED)),
    # StarCoder: bigcode/starcoder's config.json fields as the Cerebras model zoo's GPTBigCode
    # converter defaults and a public architecture-analyzer test spell them out.
    "starcoder": dict(type="gpt_bigcode", full=False, kw=dict(
        n_embd=6144, n_layer=40, n_head=48, n_inner=24576, n_positions=8192, vocab_size=49152, multi_query=True,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)),
}

# Preset -> (card URL, figure as the card publishes it, exact count if published exactly, where).
HF = "https://huggingface.co/"
CARDS = {
    "qwen3-0.6b": (HF + "Qwen/Qwen3-0.6B", "0.6B (non-embedding 0.44B)", None, "card: Number of Parameters"),
    "qwen3-4b": (HF + "Qwen/Qwen3-4B", "4.0B (non-embedding 3.6B)", 4022468096, "card rounds; exact: domain.md section 6 (meta build)"),
    "qwen3-8b": (HF + "Qwen/Qwen3-8B", "8.2B (non-embedding 6.95B)", 8190735360, "card rounds; exact: domain.md section 6 (meta build)"),
    "qwen3-14b": (HF + "Qwen/Qwen3-14B", "14.8B (non-embedding 13.2B)", None, "card: Number of Parameters"),
    "qwen3-32b": (HF + "Qwen/Qwen3-32B", "32.8B (non-embedding 31.2B)", None, "card: Number of Parameters"),
    "qwen3-30b-a3b": (HF + "Qwen/Qwen3-30B-A3B", "30.5B total, 3.3B activated (non-embedding 29.9B)", 30532122624,
                      "card rounds; exact: domain.md section 6 (meta build)"),
    "gemma-2-9b": (HF + "google/gemma-2-9b", "9B (Hub page: 9.24B params)", None, "card title; Hub safetensors total"),
    "gemma-3-1b": (HF + "google/gemma-3-1b-pt", "1B (Hub page: 1000M params)", None, "card; text only"),
    "gemma-3-4b": (HF + "google/gemma-3-4b-pt", "4B (Hub page: 4.3B params, vision included)", None, "card"),
    "gemma-3-12b": (HF + "google/gemma-3-12b-pt", "12B (Hub page: 12.2B params, vision included)", None, "card"),
    "gemma-3-27b": (HF + "google/gemma-3-27b-pt", "27B (Hub page: 27.4B params, vision included)", None, "card"),
    "gpt-oss-20b": (HF + "openai/gpt-oss-20b", "21B parameters, 3.6B active", 20914757184,
                    "card rounds; exact: domain.md section 6 (meta build)"),
    "gpt-oss-120b": (HF + "openai/gpt-oss-120b", "117B parameters, 5.1B active", None, "card"),
    "deepseek-v3": (HF + "deepseek-ai/DeepSeek-V3", "671B total, 37B activated (checkpoint 685B incl. 14B MTP module)",
                    671026404352, "card rounds; exact: domain.md section 6 (meta build)"),
    "olmo-2-7b": (HF + "allenai/OLMo-2-1124-7B", "7B (Hub page: 7.3B params)", None, "card"),
    "olmo-2-13b": (HF + "allenai/OLMo-2-1124-13B", "13B (Hub page: 13.7B params)", None, "card"),
    "smollm3-3b": (HF + "HuggingFaceTB/SmolLM3-3B", "3B (Hub page: 3.08B params)", None, "card"),
    "llama-3.2-1b": (HF + "meta-llama/Llama-3.2-1B", "1B (1.23B)", None, "card: model information table"),
    "llama-3.2-3b": (HF + "meta-llama/Llama-3.2-3B", "3B (3.21B)", None, "card: model information table"),
    "phi-2": (HF + "microsoft/phi-2", "2.7 billion parameters (Hub page: 2.78B params)", None, "card"),
    "falcon-7b": (HF + "tiiuae/falcon-7b", "7B parameters (Hub page: 7.22B params)", None,
                  "card; the Hub's 7.22B counts the tied lm_head a second time (+65,024 x 4,544 = 7,217,189,760)"),
    "granite-3.1-8b": (HF + "ibm-granite/granite-3.1-8b-base", "8B (Hub page: 8.17B params)", None, "card"),
}


# Further presets of the counts file, with their card and the card's figure.
CARDS.update({
    "qwen1.5-moe-a2.7b": (HF + "Qwen/Qwen1.5-MoE-A2.7B", "14.3B total, 2.7B activated", None, "card"),
    "granite-3.1-3b-a800m": (HF + "ibm-granite/granite-3.1-3b-a800m-base", "3B (800M active)", None, "card"),
    "glm-4-9b-0414": (HF + "THUDM/GLM-4-9B-0414", "9B", None, "card title"),
    "command-r-v01": (HF + "CohereForAI/c4ai-command-r-v01", "35 billion parameters", None, "card"),
    "command-r7b-12-2024": (HF + "CohereForAI/c4ai-command-r7b-12-2024", "7 billion parameters (Hub page: 8.03B)", None, "card"),
    "pythia-1b": (HF + "EleutherAI/pythia-1b", "1B (1,011,781,632 total in the Pythia table)", None, "card"),
    "starcoder2-3b": (HF + "bigcode/starcoder2-3b", "3B", None, "card"),
    "stablelm-2-1.6b": (HF + "stabilityai/stablelm-2-1_6b", "1.6 billion parameters", None, "card"),
    "ministral-8b-2410": (HF + "mistralai/Ministral-8B-Instruct-2410", "8,019,808,256 parameters", 8019808256, "card"),
    "exaone-3.5-7.8b": (HF + "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct", "7.82B (6.98B without embeddings)", None, "card"),
    "ernie-4.5-0.3b": (HF + "baidu/ERNIE-4.5-0.3B-PT", "0.36B", None, "card"),
    "mistral-small-3.1-24b": (HF + "mistralai/Mistral-Small-3.1-24B-Base-2503", "24B", None, "card"),
    "llava-1.5-7b": (HF + "llava-hf/llava-1.5-7b-hf", "7B (Hub page: 7.06B)", None, "card"),
})

CARDS.update({
    "glm-4.5-air": (HF + "zai-org/GLM-4.5-Air", "106B total, 12B active", None,
                    "card; the checkpoint also stores the multi-token-prediction layer transformers does not build"),
    "glm-4.5": (HF + "zai-org/GLM-4.5", "355B total, 32B active", None,
                "card; the checkpoint also stores the multi-token-prediction layer transformers does not build"),
    "olmoe-1b-7b-0924": (HF + "allenai/OLMoE-1B-7B-0924", "1B active, 7B total (Hub page: 6.92B params)", None, "card"),
    "starcoder": (HF + "bigcode/starcoder", "15.5B parameter models", None, "card"),
})

# The Hub's safetensors total (every tensor of the checkpoint), as quoted by public documents found
# with the code search (safetensors metadata tables, load logs): a second, exact figure. It counts
# what the checkpoint stores: Falcon-7B's tied lm_head twice, DeepSeek-V3's MTP layer (not here).
HUB_TOTALS = {
    "qwen3-0.6b": 596049920, "qwen3-4b": 4022468096, "qwen3-8b": 8190735360, "qwen3-14b": 14768307200,
    "qwen3-32b": 32762123264, "gemma-2-9b": 9241705984, "gemma-3-1b": 999885952, "gemma-3-4b": 4300079472,
    "gemma-3-12b": 12187325040, "gemma-3-27b": 27432406640, "gpt-oss-20b": 20914757184,
    "gpt-oss-120b": 116829156672, "olmo-2-7b": 7298617344, "olmo-2-13b": 13716198400, "smollm3-3b": 3075098624,
    "llama-3.2-1b": 1235814400, "llama-3.2-3b": 3212749824, "phi-2": 2779683840, "falcon-7b": 7217189760,
    "granite-3.1-8b": 8170848256, "pythia-1b": 1011781632, "stablelm-2-1.6b": 1644515328,
    "ministral-8b-2410": 8019808256, "mistral-small-3.1-24b": 24011361280,
}


def write(path, build, make_config, versions):
    """One record per preset of CARDS: `num_parameters()` of the meta build (language model and
    full model for multimodal configs) next to the card's figure."""
    out = []
    for name, (url, figure, exact, where) in CARDS.items():
        entry = PUBLISHED_FAMILIES[name]
        config = make_config(entry)
        rec = {"model": name, "model_type": config.model_type, "card_url": url, "card_figure": figure,
               "card_exact": exact, "card_source": where, "config": f"families-configs/{name}.json"}
        if entry.get("mm"):
            rec["num_parameters_language_model"] = build(config, "lm").num_parameters()
            rec["num_parameters"] = build(config, "full").num_parameters()
        else:
            rec["num_parameters"] = build(config, "causal").num_parameters()
        if exact is not None:
            rec["matches_exact"] = rec["num_parameters"] == exact
        if name in HUB_TOTALS:
            rec["hub_safetensors_total"] = HUB_TOTALS[name]
            rec["matches_hub"] = rec["num_parameters"] == HUB_TOTALS[name]
        out.append(rec)
        print(name, rec["num_parameters"], figure, flush=True)
    with open(path, "w") as f:
        json.dump({"versions": versions, "presets": out}, f, indent=1)
        f.write("\n")
