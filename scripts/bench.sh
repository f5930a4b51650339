#!/usr/bin/env bash
# Every benchmark with the default sizes, from a fresh clone: the same virtual environment as the
# other scripts, then benchmarks/run_all.py (which starts its own OpenSearch node with the test
# harness unless given --opensearch URL). Arguments go to run_all.py, e.g. `--quick` or
# `--only embed_throughput knn_recall`. Results: benchmarks/results/ (summary.md first).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
gemsearch_env .venv-dev "train,samples"
python tests/support/opensearch_harness.py prepare
exec python benchmarks/run_all.py "$@"
