#!/usr/bin/env bash
# Check, on this CPU, that bench/gpu_all.py runs under the GPU machine's library versions.
#
# The first GPU machine (NVIDIA H200) has Python 3.12, torch 2.11 (CUDA 13) and transformers 5.17,
# no TensorRT and no network. This script builds a scratch virtual environment with those versions
# OUTSIDE the repository (torch, transformers and what they pull in, plus pillow and
# opencv-python-headless; no matplotlib, onnx, onnxruntime or tensorrt), runs the benchmark's dry
# run there twice, and writes bench/results/gpu_all_compat.json:
#
#   aot_eager   exactly what tests/test_bench_gpu_all.py runs (torch.compile traced by dynamo + AOTAutograd)
#   inductor    the GPU run's torch.compile(mode="reduce-overhead") pipeline, generating C++ for this
#               CPU instead of Triton kernels (CUDA graphs are skipped on the CPU); minutes
#
#   scripts/check_gpu_bench_compat.sh
#   PYTHON=python3.12 COMPAT_VENV=/tmp/venv-gpu scripts/check_gpu_bench_compat.sh
#
# Knobs: COMPAT_VENV (default /tmp/venv-gpu), PYTHON (default python3.12 if it runs, else python3),
# TORCH_VERSION (2.11.0), TRANSFORMERS_VERSION (5.17.0), SKIP_INDUCTOR=1 (aot_eager only),
# COMPAT_OUTPUT (default bench/results/gpu_all_compat.json).
#
# torch comes from the PyTorch CPU index when it is reachable, else from PyPI, whose Linux x86_64
# wheel is the CUDA 13 build (~3 GB with its nvidia-* wheels): the GPU machine's own build, which
# runs on a CPU as well.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${COMPAT_VENV:-/tmp/venv-gpu}"
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.17.0}"
OUTPUT="${COMPAT_OUTPUT:-bench/results/gpu_all_compat.json}"
if [[ -z "${PYTHON:-}" ]]; then
  if python3.12 -c "" 2>/dev/null; then PYTHON=python3.12; else PYTHON=python3; fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[compat] creating $VENV with $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "[compat] installing torch==$TORCH_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || "${PIP[@]}" "torch==$TORCH_VERSION"
fi
echo "[compat] installing transformers==$TRANSFORMERS_VERSION pillow opencv-python-headless"
"${PIP[@]}" "transformers==$TRANSFORMERS_VERSION" pillow opencv-python-headless

RUNS=$(mktemp -d /tmp/gpu_all_compat.XXXXXX)
backends=(aot_eager)
[[ "${SKIP_INDUCTOR:-0}" == 1 ]] || backends+=(inductor)
for backend in "${backends[@]}"; do
  echo "[compat] dry run with torch.compile backend $backend (log: $RUNS/$backend.log)"
  # The inductor run compiles C++ on the CPU: give its compile sections the time they need here;
  # a fresh inductor cache, so that every graph really goes through code generation.
  TORCHINDUCTOR_CACHE_DIR="$RUNS/$backend.inductor_cache" "$VENV/bin/python" bench/gpu_all.py --dry-run --compile-backend "$backend" --output-dir "$RUNS/$backend" \
    --budget-s 1800 --section-limit seg_decoder_compiled=900 --section-limit decode_compiled=600 \
    > "$RUNS/$backend.log" 2>&1 || true
  grep -E "^\[ *[0-9.]+ s\] [a-z_]+: " "$RUNS/$backend.log" || true
done

"$VENV/bin/python" - "$RUNS" "$OUTPUT" "${backends[@]}" <<'EOF'
import datetime
import json
import platform
import sys
from pathlib import Path

runs_dir, output, backends = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
record = {
    "what": "bench/gpu_all.py --dry-run (tiny config, CPU) under the GPU machine's library versions",
    "reproduce": "scripts/check_gpu_bench_compat.sh",
    "checked_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": f"{platform.machine()} CPU, no GPU",
    "inductor_cache": "fresh per run (TORCHINDUCTOR_CACHE_DIR): every compiled graph was generated and built",
    # What bench/gpu_all.py does differently because of these versions (read in their source):
    "api_differences_handled": [
        "transformers 5.x: Phi3Model.forward has no cache_position argument (it is swallowed by **kwargs); a "
        "StaticCache layer keeps its own length in a tensor (cumulative_length). The decode step therefore passes "
        "only the embeddings, every round starts with cache.reset() + an eager prefill, and the section checks the "
        "cache length and the first step's logits against the dynamic cache.",
        "transformers 5.x: StaticCache(config) builds StaticSlidingWindowLayer for Phi-3 (sliding_window 2047), "
        "which tracks its length in a Python int: torch.compile guards on it and recompiles at every step (4 graphs "
        "for 4 steps with 5.17 and 5.23), falling back to eager past torch's recompile limit, and CUDA graphs would "
        "re-record per position. The cache is built from a copy of the config without the window "
        "(identical attention below 2047 tokens; the section refuses longer contexts).",
    ],
    "runs": {},
}
passed = True
for backend in backends:
    path = runs_dir / backend / "gpu_cpu-dry-run.json"
    if not path.is_file():
        record["runs"][backend] = {"passed": False, "status": "no results file (see the log)"}
        passed = False
        continue
    report = json.loads(path.read_text())
    sections = {name: s["status"] for name, s in report["sections"].items()}
    # Every section ok; TensorRT is absent here as on the GPU machine: its import failure is a skip.
    ok = report["status"] == "complete" and all(
        status == "ok" for name, status in sections.items() if name != "tensorrt") and sections.get("tensorrt") == "skipped"
    passed &= ok
    environment = report["environment"]
    record.setdefault("versions", {
        "python": environment["python"], "torch": environment["torch"], "torch_cuda_build": environment["torch_cuda"],
        "transformers": environment["transformers"],
        "packages": {k: v for k, v in environment["packages"].items() if v is not None},
        "absent": sorted(k for k, v in environment["packages"].items() if v is None),
    })
    decode = report["details"].get("decode_static_cache_compiled", {})
    record["runs"][backend] = {
        "passed": ok, "status": report["status"], "elapsed_s": report["elapsed_s"], "sections": sections,
        "section_seconds": {name: s["seconds"] for name, s in report["sections"].items()},
        "errors": {name: text.splitlines()[0] for name, text in report["errors"].items()},
        "tensorrt": report["sections"]["tensorrt"].get("reason"),
        "plot": report.get("plot"),
        "compile_counters": {key: report["details"].get(key, {}).get("counters")
                             for key in ("mask_decoder_compiled", "decode_static_cache_compiled")},
        "static_decode_logits_vs_dynamic_cache": decode.get("logits_vs_dynamic_cache"),
    }
record["passed"] = passed
output.write_text(json.dumps(record, indent=2) + "\n")
print(f"[compat] {'PASSED' if passed else 'FAILED'}: wrote {output}")
sys.exit(0 if passed else 1)
EOF
