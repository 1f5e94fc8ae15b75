#!/usr/bin/env python3
"""Where `gembatch serve`'s time went, from its step log (`serve --step-log FILE`).

    python3 benches/step_profile.py FILE [--from-s S] [--to-s S]

Each step's duration is fitted by least squares to what the step ran:

    seconds = per_step + per_prompt_token * prefill_tokens
              + per_decoding_sequence * decode_sequences
              + per_decode_position * decode_context
              + per_prompt_position * prefill_context

`per_step` is what a step costs whatever it holds (on a CPU mostly reading every weight
once), the token and sequence terms the matrix work that grows with the batch, the
position terms attention. The table gives each term's coefficient and its share of the
busy time over the log (or the `--from-s`/`--to-s` window of it), with the fit's R^2;
then how full the batch was. Standard library only.
"""

import argparse
import json
import sys

TERMS = [
    ("per step", None, 1e3, "ms per step"),
    ("prompt tokens", "prefill_tokens", 1e3, "ms per token"),
    ("decoding sequences", "decode_sequences", 1e3, "ms per sequence"),
    ("decode attention", "decode_context", 1e6, "us per position"),
    ("prompt attention", "prefill_context", 1e6, "us per position"),
]


FIELDS = ["at_s", "seconds"] + [field for _, field, _, _ in TERMS[1:]]


def read_steps(path, start, end):
    steps = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                step = json.loads(line)
                missing = [name for name in FIELDS if not isinstance(step.get(name), (int, float))]
            except (json.JSONDecodeError, AttributeError) as err:
                sys.exit(f"{path}:{number}: not a JSON object ({err}); is this a --step-log file?")
            if missing:
                sys.exit(f"{path}:{number}: no number for {', '.join(missing)}; "
                         "is this a --step-log file?")
            if start <= step["at_s"] <= end:
                steps.append(step)
    return steps


def row(step):
    return [1.0] + [float(step[field]) for _, field, _, _ in TERMS[1:]]


def solve(matrix, vector):
    """Gauss-Jordan elimination with partial pivoting. A column that never varies, or only
    with the others (a closed loop's prompts of one length: their attention grows with
    their tokens), is left out, its coefficient None: its time goes to the others."""
    n = len(vector)
    a = [matrix[i][:] + [vector[i]] for i in range(n)]
    tiny = 1e-9 * max(abs(matrix[i][i]) for i in range(n))
    pivot_of = {}
    for col in range(n):
        free = [r for r in range(n) if r not in pivot_of.values()]
        pivot = max(free, key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) <= tiny:
            continue
        pivot_of[col] = pivot
        for r in range(n):
            if r != pivot and a[r][col] != 0.0:
                factor = a[r][col] / a[pivot][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[pivot])]
    return [a[pivot_of[c]][n] / a[pivot_of[c]][c] if c in pivot_of else None for c in range(n)]


def fit(steps):
    """Least-squares coefficients of TERMS, with columns scaled to comparable sizes."""
    rows = [row(s) for s in steps]
    times = [s["seconds"] for s in steps]
    k = len(TERMS)
    scale = [max(abs(r[j]) for r in rows) or 1.0 for j in range(k)]
    scaled = [[r[j] / scale[j] for j in range(k)] for r in rows]
    normal = [[sum(r[i] * r[j] for r in scaled) for j in range(k)] for i in range(k)]
    rhs = [sum(r[i] * t for r, t in zip(scaled, times)) for i in range(k)]
    coef = [None if c is None else c / s for c, s in zip(solve(normal, rhs), scale)]
    used = [c or 0.0 for c in coef]
    predicted = [sum(c * x for c, x in zip(used, r)) for r in rows]
    mean = sum(times) / len(times)
    total = sum((t - mean) ** 2 for t in times)
    residual = sum((t - p) ** 2 for t, p in zip(times, predicted))
    r2 = 1.0 - residual / total if total > 0 else 1.0
    shares = [sum(c * r[j] for r in rows) for j, c in enumerate(used)]
    return coef, r2, shares


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="a file written by `gembatch serve --step-log`")
    parser.add_argument("--from-s", type=float, default=0.0, help="first step's at_s")
    parser.add_argument("--to-s", type=float, default=float("inf"), help="last step's at_s")
    args = parser.parse_args()
    steps = read_steps(args.log, args.from_s, args.to_s)
    if len(steps) < len(TERMS) + 1:
        sys.exit(f"{args.log}: {len(steps)} steps in the window, too few to fit {len(TERMS)} terms")
    busy = sum(s["seconds"] for s in steps)
    if busy <= 0:
        sys.exit(f"{args.log}: the steps in the window took no time; is this a --step-log file?")
    span = steps[-1]["at_s"] + steps[-1]["seconds"] - steps[0]["at_s"]
    coef, r2, shares = fit(steps)
    print(f"{len(steps)} steps over {span:.1f} s, busy {busy:.1f} s ({busy / span:.0%}); "
          f"fit R^2 {r2:.3f}")
    print()
    print("| term | coefficient | share of busy time |")
    print("|---|---|---|")
    for (name, _, unit_scale, unit), c, share in zip(TERMS, coef, shares):
        if c is None:
            print(f"| {name} | not separable: moves only with the other terms | - |")
        else:
            print(f"| {name} | {c * unit_scale:.3f} {unit} | {share / busy:.0%} |")
    decoding = [s["decode_sequences"] for s in steps]
    weighted = sum(s["decode_sequences"] * s["seconds"] for s in steps) / busy
    prompt_tokens = sum(s["prefill_tokens"] for s in steps)
    decoded = sum(decoding)
    print()
    print(f"decoding sequences per step: mean {decoded / len(steps):.1f}, "
          f"time-weighted {weighted:.1f}, most {max(decoding)}; "
          f"steps with prompt tokens: {sum(1 for s in steps if s['prefill_tokens'])} "
          f"({sum(s['seconds'] for s in steps if s['prefill_tokens']) / busy:.0%} of busy time)")
    print(f"tokens: {prompt_tokens} prompt, {decoded} decoded "
          f"({prompt_tokens / max(decoded, 1):.2f} prompt tokens per decoded token); "
          f"mean decode context {sum(s['decode_context'] for s in steps) / max(decoded, 1):.0f} "
          f"positions")


if __name__ == "__main__":
    main()
