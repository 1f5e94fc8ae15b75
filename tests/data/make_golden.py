"""Regenerates gembatch's own llama.cpp reference data for the default model.

    pip install llama-cpp-python==0.3.36
    python3 make_golden.py MODEL.gguf long  > gemma3-270m-long.jsonl
    python3 make_golden.py MODEL.gguf local > gemma3-270m-llamacpp-local.jsonl

`long`: BOS + long_prompt.txt (longer than Gemma 3's 512-token sliding window), then 32
tokens of greedy decoding one at a time with llama.cpp's logits, the same procedure as the
shared golden file; matching it proves the window is applied.

`local`: for every greedy case of gemma3-270m-llamacpp.jsonl, llama.cpp's argmax at each
step when fed that case's reference tokens (teacher forcing) on this machine. Where it
disagrees with the shared reference, the reference itself is not reproducible by llama.cpp
here, and the golden test says so when gembatch sides with llama.cpp-here at such a step.
"""
import json
import os
import sys

import numpy as np
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
llm = Llama(model_path=sys.argv[1], n_ctx=2048, n_threads=2, logits_all=True, verbose=False)


def argmaxes(prompt_ids, forced):
    """llama.cpp's argmax after the prompt and after each forced token (incremental decoding)."""
    llm.reset()
    llm.eval(prompt_ids)
    picks = []
    for token in forced:
        picks.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([token if token is not None else picks[-1]])
    return picks


if sys.argv[2] == "long":
    prompt = open(os.path.join(HERE, "long_prompt.txt"), encoding="utf-8").read().strip()
    prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
    assert len(prompt_ids) > 600, len(prompt_ids)
    output_ids = argmaxes(prompt_ids, [None] * 32)
    text = llm.detokenize(output_ids).decode("utf-8", errors="replace")
    print(json.dumps({"kind": "greedy", "prompt": prompt, "prompt_ids": prompt_ids, "n": 32,
                      "output_ids": output_ids, "output_text": text}, ensure_ascii=False))
else:
    for line in open(os.path.join(HERE, "gemma3-270m-llamacpp.jsonl"), encoding="utf-8"):
        case = json.loads(line)
        if case["kind"] != "greedy":
            continue
        picks = argmaxes(case["prompt_ids"], case["output_ids"])
        print(json.dumps({"kind": "teacher_forced_argmax", "prompt": case["prompt"], "ids": picks},
                         ensure_ascii=False))
