#!/usr/bin/env python3
"""Golden fixtures for dsv2's end-to-end tests, computed by Hugging Face transformers.

Runs on a machine with PyTorch and transformers (>= 5.17, which applies the YaRN mscale^2
softmax correction). For each case it:
  1. draws random weights for a tiny DeepSeek-V2-architecture model and writes them in the
     released checkpoint layout (per-expert tensor names, DeepSeek-style config.json with
     `rope_scaling`, one file or shards + model.safetensors.index.json);
  2. reloads that directory with `DeepseekV2ForCausalLM.from_pretrained` (checking that no
     tensor is missing or unexpected), in float64 with the eager attention and expert paths;
  3. writes the logits of every position of a fixed id sequence (float32 LE, [n_ids, vocab])
     and a greedy continuation of a prompt.

Usage: python3 tools/make_golden_fixtures.py --out DIR
Outputs DIR/<case>/{config.json, *.safetensors, reference.json, logits.f32}.
"""
import argparse, json, math, os, sys

import torch
from safetensors.torch import save_file
from transformers import DeepseekV2ForCausalLM

BASE = dict(
    architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2",
    vocab_size=300, hidden_size=48, intermediate_size=72, moe_intermediate_size=20,
    num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=3,
    n_shared_experts=2, n_routed_experts=8, num_experts_per_tok=3,
    routed_scaling_factor=1.0, topk_method="greedy", n_group=1, topk_group=1,
    moe_layer_freq=1, first_k_dense_replace=1, norm_topk_prob=False, scoring_func="softmax",
    aux_loss_alpha=0.001, seq_aux=True, q_lora_rank=None, kv_lora_rank=24,
    qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, hidden_act="silu",
    max_position_embeddings=640, rope_theta=10000.0,
    rope_scaling={"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 16,
                  "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    rms_norm_eps=1e-6, attention_bias=False, attention_dropout=0.0, tie_word_embeddings=False,
    bos_token_id=0, eos_token_id=1, initializer_range=0.02, use_cache=True,
    torch_dtype="float32",
)

# name -> (config overrides, stored dtype, number of shards)
CASES = {
    # DeepSeek-V2-Lite-like: plain q_proj, greedy routing, YaRN; the sequence is longer
    # than original_max_position_embeddings (16).
    "lite_like": ({}, torch.float32, 1),
    # DeepSeek-V2-like: q compression, group-limited routing, routed_scaling_factor 16,
    # BF16 weights in two shards.
    "v2_like": (dict(q_lora_rank=20, topk_method="group_limited_greedy", n_group=4,
                     topk_group=2, routed_scaling_factor=16.0, torch_dtype="bfloat16"),
                torch.bfloat16, 2),
    # No rope scaling, every layer MoE, F16 weights.
    "no_rope_scaling": (dict(rope_scaling=None, first_k_dense_replace=0, max_position_embeddings=64,
                             torch_dtype="float16"), torch.float16, 1),
    # Two dense layers, v_head_dim != qk_nope_head_dim, V2.5-style YaRN (mscale 1.0),
    # q compression with greedy routing.
    # Its factor (8) differs from max_position_embeddings / original (40): YaRN takes the explicit factor.
    "dense2_vdiff": (dict(first_k_dense_replace=2, num_hidden_layers=4, v_head_dim=12,
                          q_lora_rank=20, n_shared_experts=1,
                          rope_scaling={"type": "yarn", "factor": 8.0,
                                        "original_max_position_embeddings": 16,
                                        "beta_fast": 32, "beta_slow": 1,
                                        "mscale": 1.0, "mscale_all_dim": 1.0}),
                     torch.float32, 1),
}

N_IDS = 40          # all-position logits over this many ids
PROMPT_LEN = 6      # greedy prompt
GREEDY_NEW = 16     # greedy continuation length


def tensor_shapes(cfg):
    """Every tensor of the released layout: name -> (shape, kind)."""
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    d_nope, d_rope, d_v = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    d_c, d_cq = cfg["kv_lora_rank"], cfg["q_lora_rank"]
    E, I_moe, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"], cfg["intermediate_size"]
    shapes = {"model.embed_tokens.weight": ([V, H], "embed"),
              "model.norm.weight": ([H], "norm"),
              "lm_head.weight": ([V, H], "linear")}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = ([H], "norm")
        shapes[p + "post_attention_layernorm.weight"] = ([H], "norm")
        a = p + "self_attn."
        if d_cq is None:
            shapes[a + "q_proj.weight"] = ([nh * (d_nope + d_rope), H], "linear")
        else:
            shapes[a + "q_a_proj.weight"] = ([d_cq, H], "linear")
            shapes[a + "q_a_layernorm.weight"] = ([d_cq], "norm")
            shapes[a + "q_b_proj.weight"] = ([nh * (d_nope + d_rope), d_cq], "linear")
        shapes[a + "kv_a_proj_with_mqa.weight"] = ([d_c + d_rope, H], "linear")
        shapes[a + "kv_a_layernorm.weight"] = ([d_c], "norm")
        shapes[a + "kv_b_proj.weight"] = ([nh * (d_nope + d_v), d_c], "linear")
        shapes[a + "o_proj.weight"] = ([H, nh * d_v], "linear")
        m = p + "mlp."
        if i < cfg["first_k_dense_replace"]:
            for n, s in (("gate_proj", [I, H]), ("up_proj", [I, H]), ("down_proj", [H, I])):
                shapes[m + n + ".weight"] = (s, "linear")
        else:
            shapes[m + "gate.weight"] = ([E, H], "router")
            for e in range(E):
                for n, s in (("gate_proj", [I_moe, H]), ("up_proj", [I_moe, H]), ("down_proj", [H, I_moe])):
                    shapes[f"{m}experts.{e}.{n}.weight"] = (s, "linear")
            Is = cfg["n_shared_experts"] * I_moe
            for n, s in (("gate_proj", [Is, H]), ("up_proj", [Is, H]), ("down_proj", [H, Is])):
                shapes[m + "shared_experts." + n + ".weight"] = (s, "linear")
    return shapes


def random_weights(cfg, gen):
    out = {}
    for name, (shape, kind) in tensor_shapes(cfg).items():
        if kind == "norm":
            t = 1.0 + 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
        elif kind == "embed":
            t = torch.randn(shape, generator=gen, dtype=torch.float64)
        elif kind == "router":
            t = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(shape[1])
        else:
            gain = 3.0 if name == "lm_head.weight" else 1.0
            t = gain * torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(shape[1])
        out[name] = t
    return out


def write_model(dirname, cfg, weights, dtype, n_shards):
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    stored = {k: v.to(dtype).contiguous() for k, v in weights.items()}
    names = list(stored)
    if n_shards == 1:
        save_file(stored, os.path.join(dirname, "model.safetensors"), metadata={"format": "pt"})
        return stored
    per = math.ceil(len(names) / n_shards)
    weight_map, total = {}, 0
    for s in range(n_shards):
        fname = f"model-{s + 1:05d}-of-{n_shards:06d}.safetensors"
        part = {k: stored[k] for k in names[s * per:(s + 1) * per]}
        save_file(part, os.path.join(dirname, fname), metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    with open(os.path.join(dirname, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return stored


def make_case(name, overrides, dtype, n_shards, out, seed):
    cfg = json.loads(json.dumps(BASE))
    cfg.update(overrides)
    gen = torch.Generator().manual_seed(seed)
    weights = random_weights(cfg, gen)
    dirname = os.path.join(out, name)
    write_model(dirname, cfg, weights, dtype, n_shards)

    model, info = DeepseekV2ForCausalLM.from_pretrained(
        dirname, dtype=torch.float64, attn_implementation="eager", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"{name}: transformers did not load the checkpoint cleanly: {bad}")
    model.set_experts_implementation("eager")
    model.eval()
    print(name, "rope:", getattr(model.config, "rope_parameters", None), flush=True)

    # Loaded tensors must equal what was written (catches silent renames/fusions gone wrong).
    sd = model.state_dict()
    checked = 0
    for k, v in weights.items():
        if k in sd:
            ref = v.to(dtype).to(torch.float64)
            if not torch.equal(sd[k], ref):
                sys.exit(f"{name}: {k} differs after reload")
            checked += 1
    # Fused experts ([E, 2*I_moe, H] gate rows then up rows; [E, H, I_moe]) against the per-expert tensors.
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp.experts."
        if p + "gate_up_proj" not in sd:
            continue
        for e in range(cfg["n_routed_experts"]):
            w = lambda n: weights[f"{p}{e}.{n}.weight"].to(dtype).to(torch.float64)
            if not (torch.equal(sd[p + "gate_up_proj"][e], torch.cat([w("gate_proj"), w("up_proj")]))
                    and torch.equal(sd[p + "down_proj"][e], w("down_proj"))):
                sys.exit(f"{name}: fused experts of layer {i} expert {e} differ after reload")
            checked += 3
    print(name, f"{checked}/{len(weights)} tensors compared after reload", flush=True)

    ids = torch.randint(2, cfg["vocab_size"], (1, N_IDS), generator=gen)
    ids[0, 0] = cfg["bos_token_id"]
    with torch.no_grad():
        logits = model(ids).logits[0]                       # [N_IDS, vocab] float64
        prompt = ids[:, :PROMPT_LEN]
        gen_ids = model.generate(prompt, max_new_tokens=GREEDY_NEW, do_sample=False,
                                 eos_token_id=cfg["eos_token_id"], pad_token_id=cfg["eos_token_id"])
    logits.to(torch.float32).numpy().astype("<f4").tofile(os.path.join(dirname, "logits.f32"))
    ref = {"ids": ids[0].tolist(), "logits_file": "logits.f32",
           "logits_shape": [N_IDS, cfg["vocab_size"]], "logits_dtype": "float32",
           "logits_computed_in": "float64",
           "greedy_prompt": prompt[0].tolist(),
           "greedy_new_tokens": gen_ids[0, PROMPT_LEN:].tolist(),
           "max_new_tokens": GREEDY_NEW,
           "transformers": __import__("transformers").__version__,
           "torch": torch.__version__}
    with open(os.path.join(dirname, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(name, "greedy:", ref["greedy_new_tokens"], flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    for i, (name, (ov, dt, shards)) in enumerate(CASES.items()):
        make_case(name, ov, dt, shards, args.out, args.seed + i)


if __name__ == "__main__":
    main()
