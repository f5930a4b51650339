#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU and this repository checked out (under 8 minutes
# with warm package caches): the environment of the tests (.venv-dev with train,samples,dev) with
# onnxruntime-gpu in place of onnxruntime, as the README says for the [gpu] extra; the CUDA tests;
# and the GPU embedding benchmark (benchmarks/gpu_embed.py: PyTorch eager fp32/fp16 vs onnxruntime's
# CUDA and TensorRT providers, fp32/fp16, on real photos at 1024 px in same-size buckets).
# Results: gpu_embed.json/.md and the test log in $OUT if set, else in benchmarks/results/gpu/.
#   GPU_CHECK_BENCH_ARGS   more arguments for gpu_embed.py (e.g. "--models lite0-gem resnet50-gem")
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/gpu}"
mkdir -p "$out"
step() { echo "==> $* ($(date -u +%H:%M:%S) UTC, ${SECONDS} s)"; }

command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "error: no NVIDIA GPU here (nvidia-smi)" >&2; exit 3; }

step "environment: .venv-dev [train,samples,dev] + onnxruntime-gpu"
source scripts/env.sh
gemsearch_env .venv-dev "train,samples,dev"
py="$GEMSEARCH_VENV_IN_USE/bin/python"
uv="$(_gemsearch_uv)"
ort="$("$py" -c 'import importlib.metadata as m; print(m.version("onnxruntime"))' 2>/dev/null || true)"
pip_() {  # pip_ install|uninstall ARGS: with uv when the environment was made with it
  if [ -n "$uv" ]; then "$uv" pip "$1" -q --python "$py" "${@:2}"
  elif [ "$1" = uninstall ]; then "$py" -m pip uninstall -y -q "${@:2}"
  else "$py" -m pip install -q "${@:2}"; fi
}
if ! "$py" -c 'import importlib.metadata as m; m.version("onnxruntime-gpu")' 2>/dev/null; then
  # onnxruntime-gpu provides the same module: remove onnxruntime, then install the GPU build over it
  # (the version of the CPU build when it exists, so the rest of the environment stays as pinned)
  pip_ uninstall onnxruntime || true
  { [ -n "$ort" ] && pip_ install --force-reinstall --no-deps "onnxruntime-gpu==$ort" 2>/dev/null; } \
    || pip_ install --force-reinstall --no-deps onnxruntime-gpu
fi
"$py" - <<'PY'
import onnxruntime as ort, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "devices", torch.cuda.device_count())
print("onnxruntime", ort.__version__, ort.get_available_providers())
PY

step "CUDA tests"
set +e
timeout 240 "$py" -m pytest -q -p no:cacheprovider \
  tests/test_trainer_extraction.py tests/test_train_distributed.py tests/test_gpu_embed.py \
  "tests/test_ingest.py::test_providers_are_chosen_and_checked" \
  -k "cuda or gpu or device or providers" 2>&1 | tee "$out/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

step "GPU embedding benchmark"
# shellcheck disable=SC2086
timeout 330 "$py" benchmarks/gpu_embed.py --out "$out/gpu_embed.json" ${GPU_CHECK_BENCH_ARGS:-}
bench_rc=$?
set -e
step "done: tests exit $tests_rc, benchmark exit $bench_rc; results in $out"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
