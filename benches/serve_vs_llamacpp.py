"""gembatch serve against llama.cpp's own server (llama-server), same GGUF, same threads, in
one run: 1, 4 and 16 concurrent streaming clients, 128-token outputs.

    # llama-server from the llama-cpp-python sdist (its vendored llama.cpp), ~30 min on 2 cores,
    # for this CPU without the AMX code that crashes 0.3.36 on AMX CPUs (as .ci/python-venv):
    pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz && cd llama_cpp_python-0.3.36/vendor/llama.cpp
    CFLAGS="-march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16" CXXFLAGS="$CFLAGS" \
      cmake -B build -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release \
      -DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF \
      -DGGML_FMA=OFF -DGGML_F16C=OFF
    cmake --build build --target llama-server -j2
    # then, from the gembatch checkout (the openai SDK from the project's environment):
    cargo build --release
    "$(.ci/python-venv)/bin/python" benches/serve_vs_llamacpp.py --llama-server PATH/build/bin/llama-server [--threads 2]

A llama-server built with llama.cpp's default native flags on an AMX CPU is started with
`--no-repack`, which keeps it off the AMX code (the crash is in ggml_backend_amx_mul_mat).

Both servers batch continuously over 16 sequences (gembatch `--max-batch 16`, llama-server
`--parallel 16`). Clients are the official openai SDK (AsyncOpenAI), one coroutine per
client, each sending its requests back to back with distinct prompts, `ignore_eos` so that
every request generates exactly 128 tokens. Per level: aggregate output tokens/s (tokens
over the level's wall time), p50/p95 time to first token; per server: peak RSS (VmHWM).
Prints a Markdown table with the ratios gembatch / llama.cpp.
"""
import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import threading
import time

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = [1, 4, 16]
OUTPUT_TOKENS = 128
TOPICS = ["a lighthouse", "the sea", "a robot", "a garden", "the moon", "a train", "a city",
          "winter", "a library", "a mountain", "the desert", "a violin", "a river", "a forest",
          "a market", "an island"]


def start(command, ready_pattern):
    """Starts a server, returns (process, base URL) once its log says it listens."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    for line in process.stdout:
        match = re.search(ready_pattern, line)
        if match:
            url = match.group(1)
            # Keep draining the log so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [_ for _ in process.stdout], daemon=True).start()
            return process, url
        if time.time() > deadline:
            break
    process.kill()
    sys.exit(f"{command[0]} did not start")


async def wait_ready(url):
    # Closed before the event loop ends (a client left open complains at interpreter exit).
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
        await wait_until_listed(client, url)


async def wait_until_listed(client, url):
    for _ in range(600):
        try:
            await client.models.list()
            return
        except Exception:
            await asyncio.sleep(0.2)
    sys.exit(f"{url} never became ready")


async def one_request(client, model, prompt):
    started = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.completions.create(
        model=model, prompt=prompt, max_tokens=OUTPUT_TOKENS, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text and first is None:
            first = time.perf_counter() - started
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return first if first is not None else time.perf_counter() - started, tokens


async def level(url, clients, requests_per_client):
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600) as client:
        return await level_with(client, clients, requests_per_client)


async def level_with(client, clients, requests_per_client):
    model = (await client.models.list()).data[0].id

    async def user(u):
        results = []
        for r in range(requests_per_client):
            topic = TOPICS[(u * requests_per_client + r) % len(TOPICS)]
            prompt = f"Client {u}, request {r}: write a long story about {topic}."
            results.append(await one_request(client, model, prompt))
        return results

    started = time.perf_counter()
    results = [x for per_user in await asyncio.gather(*(user(u) for u in range(clients)))
               for x in per_user]
    wall = time.perf_counter() - started
    ttfts = sorted(t for t, _ in results)
    tokens = sum(n for _, n in results)
    return {
        "tokens_per_s": tokens / wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))],
        "tokens": tokens,
        "expected_tokens": clients * requests_per_client * OUTPUT_TOKENS,
    }


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def measure(name, command, pattern, requests_per_client):
    process, url = start(command, pattern)
    try:
        await wait_ready(url)
        await level(url, 1, 1)  # warm-up
        results = {}
        for clients in LEVELS:
            results[clients] = await level(url, clients, requests_per_client(clients))
            r = results[clients]
            print(f"{name} {clients:>2} clients: {r['tokens_per_s']:.1f} tok/s, "
                  f"TTFT p50 {r['ttft_p50']:.3f} s p95 {r['ttft_p95']:.3f} s "
                  f"({r['tokens']}/{r['expected_tokens']} tokens)", file=sys.stderr)
        results["rss"] = peak_rss_mib(process.pid)
        return results
    finally:
        process.terminate()
        process.wait(timeout=60)


def cpu_has_amx():
    """Whether this CPU has AMX, where llama.cpp 0.3.36 must stay off its AMX code."""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        return any(line.startswith("flags") and "amx_int8" in line.split() for line in cpuinfo)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", required=True, help="path to the llama-server binary")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", help="GGUF path [default: gembatch's cached default model]")
    parser.add_argument("--requests-per-client", type=int, default=0,
                        help="requests each client sends [default: 4 at 1 client, 2 at 4, 1 at 16]")
    args = parser.parse_args()
    gembatch = os.path.join(ROOT, "target", "release", "gembatch")
    model = args.model or subprocess.run([gembatch, "fetch-model"], check=True, text=True,
                                         capture_output=True).stdout.strip().splitlines()[-1]
    per_client = (lambda c: args.requests_per_client) if args.requests_per_client else \
        (lambda c: {1: 4, 4: 2}.get(c, 1))
    threads = str(args.threads)
    ours = asyncio.run(measure("gembatch", [
        gembatch, "serve", "--model", model, "--threads", threads, "--listen", "127.0.0.1:0",
        "--max-batch", "16", "--context", "1024"], r"listening on (http://\S+)", per_client))
    no_amx = ["--no-repack"] if cpu_has_amx() else []
    theirs = asyncio.run(measure("llama.cpp", [
        args.llama_server, "-m", model, "-t", threads, "-tb", threads, "--parallel", "16",
        "-c", str(16 * 1024), "--host", "127.0.0.1", "--port", "18089", "--no-webui", *no_amx],
        r"listening on (http://\S+)", per_client))

    print("| | gembatch serve | llama-server | gembatch / llama.cpp |")
    print("|---|---|---|---|")
    for clients in LEVELS:
        a, b = ours[clients], theirs[clients]
        print(f"| {clients} clients: output tokens/s | {a['tokens_per_s']:.1f} | "
              f"{b['tokens_per_s']:.1f} | {a['tokens_per_s'] / b['tokens_per_s']:.2f}x |")
        for key, label in (("ttft_p50", "p50"), ("ttft_p95", "p95")):
            print(f"| {clients} clients: {label} TTFT (s) | {a[key]:.3f} | {b[key]:.3f} | "
                  f"{a[key] / b[key]:.2f}x |")
    print(f"| peak RSS (MiB) | {ours['rss']:.0f} | {theirs['rss']:.0f} | "
          f"{ours['rss'] / theirs['rss']:.2f}x |")


if __name__ == "__main__":
    main()
