"""Regenerates gembatch's own llama.cpp reference data for the default model, with the
llama-cpp-python of the project's virtual environment (`.ci/python-venv`: 0.3.36, built for
this CPU without AMX):

    VENV="$(.ci/python-venv)"
    "$VENV/bin/python" tests/data/make_golden.py MODEL.gguf long > tests/data/gemma3-270m-long.jsonl
    "$VENV/bin/python" tests/data/make_golden.py MODEL.gguf topk > tests/data/gemma3-270m-llamacpp-topk.jsonl

and the second top-k file with llama.cpp built for SSE4.2 only (another summation order, as
another CPU would have), in a virtual environment of its own:

    python3 -m venv /tmp/sse42 && CFLAGS=-march=x86-64-v2 CXXFLAGS=-march=x86-64-v2 \
      CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF" \
      /tmp/sse42/bin/pip install --no-cache-dir llama-cpp-python==0.3.36
    /tmp/sse42/bin/python tests/data/make_golden.py MODEL.gguf topk > tests/data/gemma3-270m-llamacpp-topk-sse42.jsonl
    /tmp/sse42/bin/python tests/data/make_golden.py MODEL.gguf spread tests/data/gemma3-270m-llamacpp-topk.jsonl

`long`: BOS + long_prompt.txt (longer than Gemma 3's 512-token sliding window), then 32
tokens of greedy decoding one at a time with llama.cpp's logits, the same procedure as the
shared golden file; its path proves the window is applied.

`topk`: for every greedy path (the shared reference's six, the long one, and llama.cpp's
own greedy path of each prompt in EXTRA_PROMPTS), the prompt is evaluated, then the path is
fed one token at a time (teacher forcing); at every step llama.cpp's TOP_K highest logits
are stored with their token ids. The golden test feeds gembatch the same path and compares
its logits with these, within bounds that hold across CPUs (see tests/golden.rs).

`spread OTHER.jsonl`: compares this llama.cpp build with a `topk` file made by another
build or CPU: steps where the top token differs and the largest |logit difference| over
the top-k, the figures the golden test's bounds come from.
"""
import json
import os
import platform
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_K = 10
STEPS = 32
# Prompts beyond the shared reference, for more steps and kinds of text: a chat turn (with
# control tokens), French, JSON, a numbered list.
EXTRA_PROMPTS = [
    "<start_of_turn>user\nWrite a haiku about GPUs.<end_of_turn>\n<start_of_turn>model\n",
    "La tour Eiffel a été construite",
    '{"name": "gembatch", "language": "Rust", "features": [',
    "Steps to bake bread:\n1.",
]

llm = Llama(model_path=sys.argv[1], n_ctx=2048, n_threads=2, logits_all=True, verbose=False)


def cpu_name():
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_flags():
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return [f for f in flags if f.startswith(("avx", "amx")) or f == "fma"]
    return []


def greedy(prompt_ids, forced):
    """llama.cpp's logits after the prompt and after each token of `forced` (incremental
    decoding, one token at a time); a `None` in `forced` feeds llama.cpp's own argmax."""
    llm.reset()
    llm.eval(prompt_ids)
    path, steps = [], []
    for token in forced:
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        # Highest first; equal logits by token id, as gembatch's argmax breaks ties.
        top = sorted(np.argpartition(-logits, TOP_K)[:TOP_K], key=lambda t: (-logits[t], t))
        steps.append({"ids": [int(t) for t in top], "logits": [round(float(logits[t]), 4) for t in top]})
        token = int(top[0]) if token is None else token
        path.append(token)
        llm.eval([token])
    return path, steps


def read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def topk_cases():
    cases = [c for c in read("gemma3-270m-llamacpp.jsonl") if c["kind"] == "greedy"]
    cases += read("gemma3-270m-long.jsonl")
    for case in cases:
        yield case["prompt"], case["prompt_ids"], case["output_ids"], "reference path"
    for prompt in EXTRA_PROMPTS:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        yield prompt, ids, [None] * STEPS, "llama.cpp's greedy path on the machine below"


def main():
    mode = sys.argv[2]
    if mode == "long":
        prompt = open(os.path.join(HERE, "long_prompt.txt"), encoding="utf-8").read().strip()
        prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        assert len(prompt_ids) > 600, len(prompt_ids)
        output_ids, _ = greedy(prompt_ids, [None] * STEPS)
        text = llm.detokenize(output_ids).decode("utf-8", errors="replace")
        print(json.dumps({"kind": "greedy", "prompt": prompt, "prompt_ids": prompt_ids, "n": STEPS,
                          "output_ids": output_ids, "output_text": text}, ensure_ascii=False))
    elif mode == "topk":
        made_on = {"cpu": cpu_name(), "flags": cpu_flags(),
                   "llama_cpp_python": llama_cpp.__version__,
                   "llama_cpp": llama_cpp.llama_print_system_info().decode().strip()}
        for prompt, prompt_ids, forced, source in topk_cases():
            path, steps = greedy(prompt_ids, forced)
            print(json.dumps({"prompt": prompt, "prompt_ids": prompt_ids, "path": path, "source": source,
                              "made_on": made_on, "steps": steps}, ensure_ascii=False))
    elif mode == "spread":
        other = [json.loads(line) for line in open(sys.argv[3], encoding="utf-8")]
        differ, margins, deltas = 0, [], []
        total = 0
        for case in other:
            _, steps = greedy(case["prompt_ids"], case["path"])
            for here, there in zip(steps, case["steps"]):
                total += 1
                if here["ids"][0] != there["ids"][0]:
                    differ += 1
                    margins.append(round(there["logits"][0] - there["logits"][1], 4))
                theirs = dict(zip(there["ids"], there["logits"]))
                mine = dict(zip(here["ids"], here["logits"]))
                deltas += [abs(theirs[token] - mine[token]) for token in set(theirs) & set(mine)]
        print(json.dumps({"steps": total, "top_token_differs": differ, "their_top2_margins_there": margins,
                          "largest_abs_logit_difference_in_both_top_k": round(max(deltas), 4),
                          "median_abs_logit_difference_in_both_top_k": round(float(np.median(deltas)), 4)}))
    else:
        sys.exit(f"unknown mode {mode!r}: long, topk or spread")


main()
