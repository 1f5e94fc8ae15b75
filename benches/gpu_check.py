#!/usr/bin/env python3
"""The GPU check: gembatch's CUDA build against transformers on the same device, then serving
Gemma 3 4B's shape under load. One command, within 10 minutes on one H200.

Here (with the Rust toolchain), once per change, gather what travels to the GPU machine (the
stripped CUDA binary and the Gemma 3 tokenizer, compressed: well under its 64 MiB limit):

    .ci/cuda-build                                  # target/cuda/release/gembatch
    python3 benches/gpu_check.py prepare gpu-check   # gpu-check/{gembatch,tokenizer.json}.xz

On the GPU machine (PyTorch and transformers installed there, nothing downloaded):

    python3 benches/gpu_check.py run gpu-check --out results/gpu-check

Without a GPU the same `run` goes end to end on the CPU with the tiny shape only (the 4B
shape in f32 needs ~17 GB and hours there): `--shapes tiny` is the default then.

For each shape (random weights from its config, seeded; norms perturbed so their loading
counts) and checkpoint layout (text-only `Gemma3ForCausalLM` and multimodal
`Gemma3ForConditionalGeneration`, the language model under a prefix, for the tiny shape; the
multimodal one, as Gemma 3 4B ships, for the 4B shape):
- transformers' logits over STEPS teacher-forced tokens in f32 (the reference) and in bf16;
- gembatch's (`gembatch logits`, one token at a time through the serving forward pass) with
  the matrices in f32 and in bf16;
- max and mean |dlogit| against the reference, and top-1 agreement, overall and where the
  reference's best token leads by a clear margin (more than twice transformers' own bf16
  error, so rounding cannot flip it).
Bounds (the check fails past them): gembatch f32 within 2e-3 of transformers f32: the same
arithmetic up to summation order (TF32 off on both sides), which moves f32 dot products of
10,240 terms by ~1e-5 relative and random-weight logits (|logit| < 10) by ~1e-4; a wrong
mask, RoPE or norm moves them by 1e-2 and more (tiny shape on a 2-core AMD EPYC: 2e-6 against
transformers' 1e-6 from float64). gembatch bf16 no further from the reference than 2x
transformers' own bf16 (mean |dlogit|); 100 % top-1 agreement where the reference's best
token leads clearly, for both.

Then on the largest shape: `gembatch serve` on the device and `gembatch load` at 1, 10 and 50
users (the seed's table: one L4 replica, ~1.4 s mean latency at 10 users, ~6.2 s at 50) and
16 users decoding together: output tok/s, TTFT, mean latency, peak GPU memory (nvidia-smi).

Everything lands in OUT: summary.json and summary.md (the table), the load runs' folders, the
logs. Exit status 0 only when every bound held and every step ran.

    python3 benches/gpu_check.py scaling gpu-check --out results/gpu-scaling [--batches 1,8,32,64]

measures the decode speed of the 4B shape (bf16) by batch size with `gembatch bench-model`
(scaling.json and scaling.md), to see where a decode step's time goes as sequences are added.
"""

import argparse
import json
import lzma
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

STEPS = 256
SEED = 20261204
# Gemma 3 4B (google/gemma-3-4b-it's text_config), random weights of the real shapes.
SHAPES = {
    "tiny": dict(
        vocab_size=262_208, hidden_size=128, intermediate_size=512, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=1, head_dim=64, sliding_window=64,
        max_position_embeddings=4096,
    ),
    "4b": dict(
        vocab_size=262_208, hidden_size=2560, intermediate_size=10_240, num_hidden_layers=34,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=1024,
        max_position_embeddings=131_072, rope_scaling={"rope_type": "linear", "factor": 8.0},
    ),
}
COMMON = dict(
    rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
    query_pre_attn_scalar=256, hidden_activation="gelu_pytorch_tanh",
    final_logit_softcapping=None, attn_logit_softcapping=None, layer_types=None,
    bos_token_id=2, eos_token_id=1, pad_token_id=0,
)
# Both layouts on the tiny shape; the 4B shape in the layout its real checkpoints have (a
# second 4B layout would not fit the device's 10 minutes).
LAYOUTS = {"tiny": ["text", "multimodal"], "4b": ["multimodal"]}
LOAD_USERS = [1, 10, 50]
LOAD_PROMPT_TOKENS = 256
LOAD_OUTPUT_TOKENS = 128
LOAD_SECONDS = 30
F32_BOUND = 2e-3
# What may travel to the GPU machine (its limit is 64 MiB for everything carried).
CARRY_LIMIT = 60 * 2**20


def say(line):
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# --- prepare (here) ------------------------------------------------------------------------

def prepare(out: Path, binary: Path):
    out.mkdir(parents=True, exist_ok=True)
    if not binary.exists():
        sys.exit(f"{binary} is missing: run .ci/cuda-build first")
    stripped = out / "gembatch"
    shutil.copy(binary, stripped)
    subprocess.run(["strip", stripped], check=True)
    compress(stripped)
    # The CPU build writes the default model's tokenizer (the CUDA one needs a driver).
    tokenizer = out / "tokenizer.json"
    subprocess.run(["cargo", "run", "--release", "--quiet", "--", "fetch-model",
                    "--tokenizer-json", tokenizer], check=True, stdout=subprocess.DEVNULL)
    compress(tokenizer)
    for f in sorted(out.iterdir()):
        say(f"{f}: {f.stat().st_size / 2**20:.1f} MiB")
    total = sum(f.stat().st_size for f in out.iterdir())
    if total > CARRY_LIMIT:
        sys.exit(f"{out} holds {total / 2**20:.0f} MiB: more than the {CARRY_LIMIT // 2**20} MiB that travel")


def compress(path: Path):
    with open(path, "rb") as src, lzma.open(f"{path}.xz", "wb", preset=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    path.unlink()


def unpack(carry: Path, work: Path):
    for name in ["gembatch", "tokenizer.json"]:
        with lzma.open(carry / f"{name}.xz") as src, open(work / name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    (work / "gembatch").chmod(0o755)
    return work / "gembatch", work / "tokenizer.json"


# --- checkpoints and reference logits -------------------------------------------------------

def model_class(transformers, layout):
    return transformers.Gemma3ForCausalLM if layout == "text" else transformers.Gemma3ForConditionalGeneration


def make_checkpoint(torch, transformers, shape, layout, device, directory: Path, tokenizer):
    """Random weights of `shape` in `layout`, saved as bf16 safetensors."""
    text = transformers.Gemma3TextConfig(**SHAPES[shape], **COMMON)
    if layout == "text":
        config = text
    else:
        # The tiny shape's vision tower is tiny too; the 4B one is the real SigLIP's.
        vision = {} if shape == "4b" else {"vision_config": dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)}
        config = transformers.Gemma3Config(text_config=text.to_dict(), **vision)
    torch.manual_seed(SEED)
    with torch.device(device):
        model = model_class(transformers, layout)(config).to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
    model.save_pretrained(directory, safe_serialization=True)
    shutil.copy(tokenizer, directory / "tokenizer.json")


def reference_logits(torch, transformers, layout, directory, ids, dtype, device):
    """transformers' logits after each token, [steps, vocab] float32 on the CPU, from the
    checkpoint as transformers loads it in `dtype` (its RoPE tables and embedding scale are
    then computed as in that dtype's real use, not rounded from a bf16 model)."""
    model = model_class(transformers, layout).from_pretrained(directory, dtype=dtype).to(device).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=False)
    logits = out.logits[0].float().cpu()
    del model, out
    if device == "cuda":
        torch.cuda.empty_cache()
    return logits


def gembatch_logits(torch, gembatch, directory, ids, device, dtype, log):
    out = directory / f"logits-{dtype}.f32"
    run = subprocess.run(
        [gembatch, "logits", "--model", directory, "--device", device, "--dtype", dtype,
         "--ids", ",".join(map(str, ids)), "--out", out],
        capture_output=True, text=True, env=gembatch_env(RUST_LOG="info"),
    )
    log.write(run.stderr)
    if run.returncode != 0:
        raise RuntimeError(f"gembatch logits failed ({run.returncode}): {run.stderr[-2000:]}")
    summary = json.loads(run.stdout)
    values = torch.from_file(str(out), dtype=torch.float32, size=len(ids) * summary["vocab"])
    out.unlink()
    return values.view(len(ids), summary["vocab"]), summary


def compare(torch, reference, other, clear_margin):
    delta = (reference - other).abs()
    top2 = reference.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > clear_margin
    same = reference.argmax(-1) == other.argmax(-1)
    return {
        "max_abs_dlogit": float(delta.max()),
        "mean_abs_dlogit": float(delta.mean()),
        "top1_agreement": float(same.float().mean()),
        "clear_positions": int(clear.sum()),
        "top1_agreement_clear": float(same[clear].float().mean()) if clear.any() else 1.0,
    }


def check_logits(torch, transformers, gembatch, shape, layout, device, work, tokenizer, log):
    directory = work / f"{shape}-{layout}"
    directory.mkdir()
    say(f"{shape} {layout}: random checkpoint")
    make_checkpoint(torch, transformers, shape, layout, device, directory, tokenizer)
    generator = torch.Generator().manual_seed(SEED)
    ids = [2] + torch.randint(3, SHAPES[shape]["vocab_size"], (STEPS - 1,), generator=generator).tolist()
    say(f"{shape} {layout}: transformers f32 and bf16")
    ref = reference_logits(torch, transformers, layout, directory, ids, torch.float32, device)
    hf_bf16 = reference_logits(torch, transformers, layout, directory, ids, torch.bfloat16, device)
    hf = compare(torch, ref, hf_bf16, 0.0)
    margin = 2 * hf["max_abs_dlogit"]
    result = {"shape": shape, "layout": layout, "steps": STEPS, "clear_margin": margin,
              "transformers_bf16": compare(torch, ref, hf_bf16, margin)}
    for dtype in ["f32", "bf16"]:
        say(f"{shape} {layout}: gembatch {dtype}")
        logits, summary = gembatch_logits(torch, gembatch, directory, ids, device, dtype, log)
        result[f"gembatch_{dtype}"] = compare(torch, ref, logits, margin) | {
            "device": summary["device"], "weights": summary["weights"],
            "load_seconds": summary["load_seconds"], "forward_seconds": summary["forward_seconds"],
        }
    g32, g16, hf16 = result["gembatch_f32"], result["gembatch_bf16"], result["transformers_bf16"]
    result["failures"] = [
        message for ok, message in [
            (g32["max_abs_dlogit"] <= F32_BOUND, f"gembatch f32 max |dlogit| {g32['max_abs_dlogit']:.2e} > {F32_BOUND}"),
            (g16["mean_abs_dlogit"] <= 2 * hf16["mean_abs_dlogit"],
             f"gembatch bf16 mean |dlogit| {g16['mean_abs_dlogit']:.2e} > 2x transformers bf16's {hf16['mean_abs_dlogit']:.2e}"),
            (g32["top1_agreement_clear"] == 1.0, "gembatch f32 changed a clear top-1"),
            (g16["top1_agreement_clear"] == 1.0, "gembatch bf16 changed a clear top-1"),
        ] if not ok
    ]
    return result, directory


# --- serving under load ---------------------------------------------------------------------

def env_with(**extra):
    env = dict(os.environ)
    env.update(extra)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GpuMemory:
    """Peak GPU memory of process `pid` (nvidia-smi's per-process figure every 0.5 s), MiB;
    None without a GPU."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, None, threading.Event()
        if shutil.which("nvidia-smi"):
            threading.Thread(target=self.poll, daemon=True).start()

    def poll(self):
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        while not self.stop.is_set():
            out = subprocess.run(query, capture_output=True, text=True)
            for line in out.stdout.splitlines() if out.returncode == 0 else []:
                pid, used = (field.strip() for field in line.split(","))
                if pid == str(self.pid):
                    self.peak = max(self.peak or 0, int(used))
            self.stop.wait(0.5)


def serve_and_load(gembatch, directory, device, out: Path, log, max_batch):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [gembatch, "serve", "--model", directory, "--device", device, "--listen", f"127.0.0.1:{port}",
         "--max-batch", str(max_batch)],
        stdout=log, stderr=log, env=gembatch_env(RUST_LOG="info"), start_new_session=True,
    )
    memory = GpuMemory(server.pid)
    rows = []
    try:
        started = time.time()
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"gembatch serve exited with {server.returncode}: see the log")
            try:
                urllib.request.urlopen(f"{url}/ready", timeout=2)
                break
            except OSError:
                if time.time() - started > 300:
                    raise RuntimeError("gembatch serve was not ready in 300 s")
                time.sleep(1)
        rows.append({"step": "serve ready", "seconds": round(time.time() - started, 1)})
        for users in LOAD_USERS + [16]:
            name = f"load-{users}" if users != 16 else "batch-16"
            say(f"load: {users} users for {LOAD_SECONDS} s")
            run = subprocess.run(
                [gembatch, "load", "--url", url, "--out", out / name, "--users", str(users),
                 "--duration", f"{LOAD_SECONDS}s", "--warmup", "0s",
                 "--prompt-tokens", str(LOAD_PROMPT_TOKENS), "--output-tokens", str(LOAD_OUTPUT_TOKENS),
                 "--ignore-eos", "--timeout", "120s"],
                capture_output=True, text=True, env=gembatch_env(),
            )
            log.write(run.stdout + run.stderr)
            rows.append({"step": name, "users": users, "exit": run.returncode} | load_figures(run.stdout + run.stderr))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        memory.stop.set()
    return rows, memory.peak


STEP_LINE = re.compile(
    r"step \d+/\d+ \(.*?\): (?P<requests>\d+) requests, (?P<failed>\d+) failed.*?"
    r"(?P<tok>[\d.]+) output tok/s, ttft p50 (?P<ttft50>[\d.]+ m?s) p95 (?P<ttft95>[\d.]+ m?s), "
    r"e2e p50 (?P<e2e50>[\d.]+ m?s) p95 (?P<e2e95>[\d.]+ m?s)"
)


def seconds(text):
    value, unit = text.split()
    return float(value) / 1000 if unit == "ms" else float(value)


def load_figures(output):
    """The figures of a one-step load run, from the line it prints for the step."""
    match = STEP_LINE.search(output)
    if match is None:
        return {"error": "no step line in gembatch load's output"}
    return {
        "requests": int(match["requests"]), "failed": int(match["failed"]),
        "output_tok_per_s": float(match["tok"]),
        "p95_ttft_s": seconds(match["ttft95"]),
        "p50_latency_s": seconds(match["e2e50"]), "p95_latency_s": seconds(match["e2e95"]),
    }


def gembatch_env(**extra):
    """The environment gembatch runs in: CUDA's libraries from the system toolkit and from
    PyTorch's NVIDIA wheels on LD_LIBRARY_PATH (the driver's libcuda is the system's); on a
    machine without a driver, .ci/cuda-toolkit's runtime and link stubs, as in CI."""
    dirs = [os.environ.get("LD_LIBRARY_PATH", ""), "/usr/local/cuda/lib64"]
    for root in {Path(p) for p in sys.path if p.endswith("site-packages")}:
        dirs += sorted(str(d) for d in root.glob("nvidia/**/lib") if d.is_dir())
    toolkit = Path(os.environ.get("GEMBATCH_CUDA", Path.home() / ".cache/gembatch/cuda-13.0")) / "nvidia/cu13/lib"
    if not Path("/proc/driver/nvidia").exists() and toolkit.is_dir():
        dirs += [str(toolkit), str(toolkit / "stubs")]
    return env_with(LD_LIBRARY_PATH=":".join(d for d in dirs if d), **extra)


def check_libraries(gembatch, log):
    """ldd of the binary in gembatch's environment, logged; an error naming what is missing."""
    ldd = subprocess.run(["ldd", gembatch], capture_output=True, text=True, env=gembatch_env())
    log.write(f"ldd {gembatch}:\n{ldd.stdout}\n")
    missing = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    if missing:
        raise RuntimeError(f"gembatch cannot start, libraries not found: {', '.join(missing)}")


# --- the run --------------------------------------------------------------------------------

def run(carry: Path, out: Path, shapes, layouts):
    out.mkdir(parents=True, exist_ok=True)
    try:
        import torch
        import transformers
    except ImportError as err:
        summary = {"skipped": f"no PyTorch/transformers here ({err}): the comparison needs them"}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        say(summary["skipped"])
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = shapes or (["tiny", "4b"] if device == "cuda" else ["tiny"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    summary = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
               "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "logits": [], "failures": []}

    def save():
        # After every step: a run cut short by the device's time limit still reports.
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        (out / "summary.md").write_text(markdown(summary))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp, open(out / "gembatch.log", "w") as log:
        work = Path(tmp)
        gembatch, tokenizer = unpack(carry, work)
        check_libraries(gembatch, log)
        served = None
        for shape in shapes:
            for layout in layouts or LAYOUTS[shape]:
                try:
                    result, directory = check_logits(torch, transformers, gembatch, shape, layout,
                                                     device, work, tokenizer, log)
                except Exception as err:  # one shape's failure must not hide the others'
                    result, directory = {"shape": shape, "layout": layout, "failures": [repr(err)]}, None
                summary["logits"].append(result)
                summary["failures"] += [f"{shape} {layout}: {f}" for f in result["failures"]]
                save()
                if directory is not None:
                    if served is not None:
                        shutil.rmtree(served[0])
                    served = (directory, shape)
                    if device == "cuda":
                        torch.cuda.empty_cache()
        if served is not None:
            say(f"serving {served[1]} under load")
            try:
                rows, peak = serve_and_load(gembatch, served[0], device, out, log,
                                            max_batch=64 if device == "cuda" else 16)
                summary["serving"] = {"shape": served[1], "rows": rows, "peak_gpu_mib": peak}
            except Exception as err:
                summary["failures"].append(f"serving: {err!r}")
    save()
    print(markdown(summary))
    return 1 if summary["failures"] else 0


def scaling(carry: Path, out: Path, batches):
    """Decode speed of the 4B shape (bf16, random weights) by batch size, from
    `gembatch bench-model`: where the time of a decode step goes as sequences are added
    (a step that costs the same at 1 and 64 sequences is bound by per-step overhead, one
    that grows with them by per-sequence work)."""
    import torch
    import transformers
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = "4b" if device == "cuda" else "tiny"
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-scaling-") as tmp, open(out / "scaling.log", "w") as log:
        work = Path(tmp)
        gembatch, tokenizer = unpack(carry, work)
        check_libraries(gembatch, log)
        directory = work / shape
        directory.mkdir()
        say(f"{shape}: random checkpoint")
        make_checkpoint(torch, transformers, shape, "multimodal", device, directory, tokenizer)
        if device == "cuda":
            torch.cuda.empty_cache()
        for batch in batches:
            say(f"bench-model --batch {batch}")
            run = subprocess.run(
                [gembatch, "bench-model", "--model", directory, "--device", device, "--batch", str(batch),
                 "--decode-tokens", "64", "--prefill-tokens", "512", "--repeat", "2"],
                capture_output=True, text=True, env=gembatch_env(),
            )
            log.write(run.stderr)
            if run.returncode != 0:
                rows.append({"batch": batch, "error": run.stderr[-500:]})
                continue
            figures = json.loads(run.stdout)
            rows.append({"batch": batch} | {k: figures[k] for k in [
                "prefill_tokens_per_s", "decode_tokens_per_s", "batch_decode_tokens_per_s", "load_seconds"]})
            (out / "scaling.json").write_text(json.dumps({"device": device, "shape": shape, "rows": rows}, indent=2))
    where = f"bf16 on {torch.cuda.get_device_name(0)}" if device == "cuda" else "f32 on the CPU"
    lines = [f"# Decode scaling, {shape} shape, {where}", "",
             "| batch | prefill tok/s (512) | decode tok/s, 1 sequence | decode tok/s, batch (aggregate) | ms per batched step |",
             "|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['batch']} | failed: {row['error'][-200:]} | | | |")
            continue
        step_ms = 1000 * row["batch"] / row["batch_decode_tokens_per_s"]
        lines.append(f"| {row['batch']} | {row['prefill_tokens_per_s']:.0f} | {row['decode_tokens_per_s']:.1f} | "
                     f"{row['batch_decode_tokens_per_s']:.1f} | {step_ms:.1f} |")
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if rows and all("error" not in row for row in rows) else 1


def markdown(summary):
    lines = [f"# GPU check on {summary['gpu'] or 'the CPU'} (torch {summary['torch']}, transformers {summary['transformers']})", "",
             "| shape | layout | path | max abs dlogit | mean abs dlogit | top-1 | top-1 where clear |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["logits"]:
        for path in ["transformers_bf16", "gembatch_f32", "gembatch_bf16"]:
            if path in r:
                m = r[path]
                lines.append(f"| {r['shape']} | {r['layout']} | {path} | {m['max_abs_dlogit']:.3g} | "
                             f"{m['mean_abs_dlogit']:.3g} | {m['top1_agreement']:.1%} | "
                             f"{m['top1_agreement_clear']:.1%} of {m['clear_positions']} |")
    if "serving" in summary:
        s = summary["serving"]
        lines += ["", f"Serving {s['shape']}: peak GPU memory {s['peak_gpu_mib']} MiB; "
                  f"{LOAD_PROMPT_TOKENS} prompt tokens, {LOAD_OUTPUT_TOKENS} output tokens, {LOAD_SECONDS} s per step", "",
                  "| step | users | requests | output tok/s | p50 latency s | p95 latency s | p95 TTFT s |",
                  "|---|---|---|---|---|---|---|"]
        for row in s["rows"]:
            lines.append(f"| {row['step']} | {row.get('users', '')} | {row.get('requests', '')} | "
                         f"{row.get('output_tok_per_s', '')} | {row.get('p50_latency_s', row.get('seconds', ''))} | "
                         f"{row.get('p95_latency_s', '')} | {row.get('p95_ttft_s', '')} |")
    lines += ["", "Failures: " + ("; ".join(summary["failures"]) or "none")]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="gather what travels to the GPU machine")
    p.add_argument("carry", type=Path)
    p.add_argument("--binary", type=Path, default=Path("target/cuda/release/gembatch"))
    r = sub.add_parser("run", help="run the check (on the GPU machine, or on the CPU with the tiny shape)")
    r.add_argument("carry", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--shapes", type=lambda s: s.split(","), default=None, help="tiny,4b [default: both on a GPU, tiny on the CPU]")
    r.add_argument("--layouts", type=lambda s: s.split(","), default=None,
                   help="text,multimodal [default: both for tiny, multimodal (the real checkpoints') for 4b]")
    c = sub.add_parser("scaling", help="decode speed of the 4B shape by batch size (tiny on the CPU)")
    c.add_argument("carry", type=Path)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8, 32, 64])
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.carry, args.binary)
        return 0
    if args.command == "scaling":
        return scaling(args.carry, args.out, args.batches)
    return run(args.carry, args.out, args.shapes, args.layouts)


if __name__ == "__main__":
    sys.exit(main())
