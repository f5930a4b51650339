#!/usr/bin/env bash
# Runs every check on a fresh machine or a warm one: virtual environment and packages (cached
# outside the clone), the OpenSearch node (fetched from Maven Central once, cached), then pytest,
# ruff and mypy. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k knn -x`.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
start=$(date +%s)

gemsearch_env .venv-dev "train,web,samples,dev,ray" || { echo "error: setting up the Python environment failed" >&2; exit 1; }

echo "==> preparing the OpenSearch test node"
python tests/support/opensearch_harness.py prepare || { echo "error: the OpenSearch test node could not be prepared" >&2; exit 1; }

echo "==> Debian's chromium for the browser tests"
bash scripts/install_chromium.sh || { echo "error: chromium could not be installed" >&2; exit 1; }

failed=()
echo "==> ruff"
ruff check . || failed+=(ruff)
echo "==> mypy -p gemsearch"
mypy -p gemsearch || failed+=(mypy)
mkdir -p test-artifacts
echo "==> pip-audit (known vulnerabilities in the installed packages)"
pip-audit --skip-editable --progress-spinner off >test-artifacts/pip-audit.txt 2>&1
audit=$?
if grep -q "known vulnerabilit" test-artifacts/pip-audit.txt && ! grep -q "No known vulnerabilities" test-artifacts/pip-audit.txt; then
  cat test-artifacts/pip-audit.txt
  failed+=(pip-audit)
elif [ $audit -ne 0 ]; then
  echo "warning: pip-audit could not run (exit $audit; see test-artifacts/pip-audit.txt)" >&2
else
  unaudited=$(grep -c "could not be audited" test-artifacts/pip-audit.txt)
  echo "no known vulnerabilities; $unaudited packages could not be looked up (the index serves no per-version data)"
fi
echo "==> pytest"
python -m pytest --junitxml=test-artifacts/junit.xml "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  failed+=("pytest (no tests)")
elif [ $rc -ne 0 ]; then
  failed+=("pytest (exit $rc)")
fi

echo "==> wall time: $(( $(date +%s) - start ))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all checks passed"
