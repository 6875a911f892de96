#!/usr/bin/env python3
"""Reference ids for the tokenizer tests, from Hugging Face `tokenizers` (and transformers).

Runs where `tokenizers` is installed (the GPU machine):

  python3 tools/make_tokenizer_goldens.py --corpus tests/tokenizer/corpus.json --out OUT \
      --tokenizer v2=PATH/tokenizer.json --tokenizer v3=DIR --tokenizer trained=DIR \
      [--bench FILE --dsv2 BINARY]

For each tokenizer NAME it writes OUT/goldens_NAME.json: per corpus case the ids without
special tokens, the decoded text (with and without special tokens), the ids special tokens add
(tokenizers from tokenizer.json alone, and transformers' AutoTokenizer where a directory with
tokenizer_config.json is given), and for the 1 MB input built by make_big_input() its id count
and FNV-1a 64 hash. Byte cases ('hex') reach tokenizers as bytes.decode('utf-8', errors='replace').

With --bench, it also times encoding FILE (cut as `dsv2 bench-tokenizer` cuts it: whole lines,
chunks of at least 4096 bytes) with tokenizers on one thread (encode per chunk) and with
encode_batch (all cores), and runs `BINARY bench-tokenizer` on the same file for a side by side.
"""
import argparse
import json
import os
import subprocess
import time

from tokenizers import Tokenizer
import tokenizers


def case_bytes(case):
    return bytes.fromhex(case["hex"]) if "hex" in case else case["text"].encode("utf-8")


def make_big_input(cases, size=1_000_000):
    """Cases picked by a 64-bit LCG, each followed by a newline, until `size` bytes (the C++
    test builds the same bytes)."""
    state, out = 12345, bytearray()
    while len(out) < size:
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out += case_bytes(cases[(state >> 33) % len(cases)]) + b"\n"
    return bytes(out)


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return "%016x" % h


def frame(plain, with_special):
    """The (prefix, suffix) ids that special tokens put around `plain` (a short plain text)."""
    for p in range(len(with_special) - len(plain) + 1):
        if with_special[p:p + len(plain)] == plain:
            return with_special[:p], with_special[p + len(plain):]
    raise ValueError("special tokens do not wrap the plain ids: %r / %r" % (plain, with_special))


def goldens(name, path, cases):
    json_path = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    tok = Tokenizer.from_file(json_path)
    out = {"tokenizer": name, "tokenizers_version": tokenizers.__version__, "cases": []}
    plain_a = tok.encode("a", add_special_tokens=False).ids
    prefix, suffix = frame(plain_a, tok.encode("a", add_special_tokens=True).ids)
    mismatches = []
    for case in cases:
        text = case_bytes(case).decode("utf-8", errors="replace")
        ids = tok.encode(text, add_special_tokens=False).ids
        if tok.encode(text, add_special_tokens=True).ids != prefix + ids + suffix:
            mismatches.append(case["name"])
        out["cases"].append({"name": case["name"], "ids": ids,
                             "decoded": tok.decode(ids, skip_special_tokens=False),
                             "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    out["special_prefix"], out["special_suffix"] = prefix, suffix
    if mismatches:
        out["special_mismatch"] = mismatches
    big = make_big_input(cases).decode("utf-8", errors="replace")
    big_ids = tok.encode(big, add_special_tokens=False).ids
    out["big"] = {"bytes": len(make_big_input(cases)), "n_ids": len(big_ids), "fnv1a64": fnv1a64(big_ids)}
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "tokenizer_config.json")):
        try:
            from transformers import AutoTokenizer
            auto = AutoTokenizer.from_pretrained(path)
            p, s = frame(plain_a, auto("a")["input_ids"])
            out["config_special_prefix"], out["config_special_suffix"] = p, s
            bad = [c["name"] for c in cases[:20] if "text" in c and auto(c["text"])["input_ids"] !=
                   p + tok.encode(c["text"], add_special_tokens=False).ids + s]
            if bad:
                out["config_special_mismatch"] = bad
            import transformers
            out["transformers_version"] = transformers.__version__
        except Exception as e:  # recorded, not fatal
            out["transformers_error"] = repr(e)
    return out, tok


def line_chunks(data, min_bytes=4096):
    chunks, start = [], 0
    while start < len(data):
        end = len(data) if len(data) - start <= min_bytes else data.find("\n", start + min_bytes)
        end = len(data) if end < 0 else end + 1
        chunks.append(data[start:end])
        start = end
    return chunks


def bench(name, tok, path, bench_file, dsv2):
    text = open(bench_file, "rb").read().decode("utf-8")
    mb = len(text.encode("utf-8")) / 1e6
    chunks = line_chunks(text)

    def best(fn, repeat=2):
        fn()  # warm-up
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    n_tokens = sum(len(e.ids) for e in tok.encode_batch(chunks, add_special_tokens=False))
    single = best(lambda: [tok.encode(c, add_special_tokens=False) for c in chunks])
    batch = best(lambda: tok.encode_batch(chunks, add_special_tokens=False))
    result = {"tokenizer": name, "bytes": len(text.encode("utf-8")), "chunks": len(chunks), "tokens": n_tokens,
              "hf_single_thread_MBps": mb / single, "hf_batch_MBps": mb / batch, "cores": os.cpu_count()}
    if dsv2:
        run = subprocess.run([dsv2, "bench-tokenizer", "--tokenizer", path, bench_file, "--json", "--repeat", "2"],
                             capture_output=True, text=True)
        result["dsv2"] = json.loads(run.stdout) if run.returncode == 0 else {"error": run.stderr}
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", action="append", required=True, help="NAME=PATH (tokenizer.json or directory)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bench")
    ap.add_argument("--dsv2")
    args = ap.parse_args()
    cases = json.load(open(args.corpus, encoding="utf-8"))["cases"]
    benches = []
    for spec in args.tokenizer:
        name, path = spec.split("=", 1)
        try:
            out, tok = goldens(name, path, cases)
        except Exception:
            import traceback
            traceback.print_exc()
            continue
        with open(os.path.join(args.out, "goldens_%s.json" % name), "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        print(name, "big:", out["big"], "config:", out.get("config_special_prefix"), out.get("transformers_error"),
              flush=True)
        if args.bench:
            benches.append(bench(name, tok, path, args.bench, args.dsv2))
            print(json.dumps(benches[-1]), flush=True)
    if benches:
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump(benches, f, indent=1)


if __name__ == "__main__":
    main()
