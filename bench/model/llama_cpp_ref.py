#!/usr/bin/env python3
"""llama.cpp reference for examples/model_bench.rs: the same GGUF file, the same prompts (dumped by
`model_bench --dump-prompts`), the same thread count, through llama-cpp-python (built from PyPI).

  bench/model/run.sh            # builds both sides and prints both tables

Reports, like model_bench: the cold request (prompt tokens / prefill time = prompt tok/s), and
requests whose system message (the policy) was already evaluated: llama-cpp-python keeps the KV
cache of the previous prompt and only evaluates the tokens after the longest common prefix. Then
the same `--distinct` contents model_bench sends, one after another (the steady state: the median
of many verdicts, steadier than the five of the reused phase). Then decoding: milliseconds per
greedy token after a ~900-token prompt.
"""
import argparse
import json
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    dump = json.load(open(a.prompts))
    prompts, distinct = dump["prompts"], dump["distinct"]

    t = time.perf_counter()
    llm = Llama(model_path=a.model, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=2048,
                n_batch=512, verbose=False)
    print(f"llama.cpp load: {time.perf_counter() - t:.2f} s, threads {a.threads}")

    def ask(p):
        msgs = [{"role": "system", "content": p["system"]}, {"role": "user", "content": p["user"]}]
        t = time.perf_counter()
        r = llm.create_chat_completion(messages=msgs, max_tokens=1, temperature=0.0)
        wall = time.perf_counter() - t
        return wall, r["usage"]["prompt_tokens"], r["choices"][0]["message"]["content"]

    wall, toks, ans = ask(prompts[0])
    print(f"cold: {wall * 1e3:.0f} ms for {toks} prompt tokens = {toks / wall:.0f} prompt tok/s (answer {ans!r})")
    reused = []
    for p in prompts[1:6]:
        w, toks, ans = ask(p)
        reused.append(w)
        print(f"  prefix reused: {w * 1e3:.0f} ms ({toks} prompt tokens, answer {ans!r})")
    reused.sort()
    print(f"prefix reused: median {reused[len(reused) // 2] * 1e3:.0f} ms")
    # The distinct contents, in model_bench's order, each after the previous one: the policy's
    # prefix stays cached (the previous prompt shares it), the content is new from its first token.
    walls, tokens = [], []
    t = time.perf_counter()
    for p in distinct:
        w, toks, _ = ask(p)
        walls.append(w)
        tokens.append(toks)
    total = time.perf_counter() - t
    if walls:
        walls.sort()
        print(f"{len(walls)} distinct sequential requests: {total:.1f} s ({len(walls) / total:.2f} verdicts/s, "
              f"median {walls[len(walls) // 2] * 1e3:.0f} ms, min {walls[0] * 1e3:.0f}, max {walls[-1] * 1e3:.0f}); "
              f"prompts {min(tokens)}-{max(tokens)} tokens")
    # Prompt throughput without any reuse: reset the cache before each of three cold runs.
    colds = []
    for p in prompts[6:9]:
        llm.reset()
        w, toks, _ = ask(p)
        colds.append(toks / w)
    print(f"cold prompt throughput over 3 more runs: {sorted(colds)[1]:.0f} tok/s (median)")
    # Decoding, the cost of a JSON answer (~35-60 tokens): greedy tokens one at a time after a
    # prompt, EOS ignored so every run decodes the same count. The reference for model_bench's
    # "decode" column divided by its answer tokens.
    n = 48
    per_token = []
    for p in prompts[6:9]:
        llm.reset()
        toks = llm.tokenize(f"{p['system']}\n{p['user']}".encode(), add_bos=True)
        llm.eval(toks)
        t = time.perf_counter()
        for _ in range(n):
            # The last evaluated position's logits (the C API: `scores` keeps n_batch rows).
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),))
            tok = int(logits.argmax())
            llm.eval([tok])
        per_token.append((time.perf_counter() - t) * 1e3 / n)
    print(f"decoding: {sorted(per_token)[1]:.1f} ms per token (median of 3 runs of {n} greedy tokens)")


if __name__ == "__main__":
    main()
