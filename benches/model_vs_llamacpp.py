"""gembatch's Gemma 3 against llama.cpp on the same GGUF and thread count, in one run.

    cargo build --release && "$(.ci/python-venv)/bin/python" benches/model_vs_llamacpp.py [--threads 2]

llama.cpp is the project environment's llama-cpp-python 0.3.36 (.ci/python-venv: built for
this CPU, -march=native, without its AMX code, which crashes on AMX CPUs).

Each side runs in its own process (so peak RSS is its own) and reports: load time, prefill
tokens/s on a 512-token prompt, single-sequence decode tokens/s; gembatch also reports
aggregate decode tokens/s of 8 sequences of different lengths decoded together. Prints a
Markdown table with the ratios gembatch / llama.cpp (for RSS and load: lower is better).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def llama_cpp_child(model, threads, prefill_tokens, decode_tokens, repeat):
    """Runs inside a child process: measures llama.cpp and prints one JSON object."""
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    started = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    load_seconds = time.perf_counter() - started
    prompt = [2] + [1000 + (i * 7919) % 20000 for i in range(prefill_tokens - 1)]
    n_vocab = llm.n_vocab()

    def next_token():
        # The last token's logits straight from llama.cpp (the wrapper's score arrays would
        # add copies that llama.cpp itself does not make).
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        return int(np.argmax(logits))

    def best(run):
        return min(run() for _ in range(repeat))

    def prefill():
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        return time.perf_counter() - t

    def decode():
        llm.reset()
        llm.eval(prompt[:16])
        t = time.perf_counter()
        for _ in range(decode_tokens):
            llm.eval([next_token()])
        return time.perf_counter() - t

    report = {
        "load_seconds": load_seconds,
        "prefill_tokens_per_s": prefill_tokens / best(prefill),
        "decode_tokens_per_s": decode_tokens / best(decode),
    }
    import resource
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(report))


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="GGUF file [default: gembatch's cached default model]")
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    binary = os.path.join(ROOT, "target", "release", "gembatch")
    model = args.model or subprocess.run([binary, "fetch-model"], check=True, capture_output=True,
                                          text=True).stdout.strip()
    if args.child:
        llama_cpp_child(model, args.threads, args.prefill_tokens, args.decode_tokens, args.repeat)
        return

    ours = run_json([binary, "bench-model", "--model", model, "--threads", str(args.threads),
                     "--prefill-tokens", str(args.prefill_tokens), "--decode-tokens", str(args.decode_tokens),
                     "--repeat", str(args.repeat)])
    theirs = run_json([sys.executable, os.path.abspath(__file__), "--child", "--model", model,
                       "--threads", str(args.threads), "--prefill-tokens", str(args.prefill_tokens),
                       "--decode-tokens", str(args.decode_tokens), "--repeat", str(args.repeat)])
    mib = 1024 * 1024
    rows = [
        ("prefill, %d-token prompt (tokens/s)" % args.prefill_tokens, ours["prefill_tokens_per_s"],
         theirs["prefill_tokens_per_s"], "%.1f"),
        ("decode, 1 sequence (tokens/s)", ours["decode_tokens_per_s"], theirs["decode_tokens_per_s"], "%.1f"),
        ("decode, %d sequences together (tokens/s, aggregate)" % ours["batch"], ours["batch_decode_tokens_per_s"],
         None, "%.1f"),
        ("peak RSS, 1 sequence (MiB)", ours["peak_rss_bytes"] / mib, theirs["peak_rss_bytes"] / mib, "%.0f"),
        ("peak RSS, with the %d-sequence batch (MiB)" % ours["batch"], ours["peak_rss_with_batch_bytes"] / mib, None,
         "%.0f"),
        ("load (s)", ours["load_seconds"], theirs["load_seconds"], "%.2f"),
    ]
    print("threads: %d, model: %s" % (args.threads, os.path.basename(model)))
    print("| | gembatch | llama.cpp (llama-cpp-python) | gembatch / llama.cpp |")
    print("|---|---|---|---|")
    for name, a, b, fmt in rows:
        if b:
            ratio = "%.2fx" % (a / b)
        elif "decode" in name:
            ratio = "%.2fx of gembatch's 1-sequence decode" % (a / ours["decode_tokens_per_s"])
        else:
            ratio = ""

        print("| %s | %s | %s | %s |" % (name, fmt % a, fmt % b if b else "n/a", ratio))


if __name__ == "__main__":
    main()
