# Sourced by the scripts in this folder: creates (once) and updates the virtual environment that
# lives outside the clone, so torch (several GB) and friends are downloaded a single time.
#   GEMSEARCH_CACHE   cache root (default: ~/.cache/gemsearch)
#   GEMSEARCH_VENV    the virtual environment (default: $GEMSEARCH_CACHE/venv)
#   PYTHON            interpreter that creates it (default: python3, >= 3.10)

GEMSEARCH_CACHE="${GEMSEARCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemsearch}"
GEMSEARCH_VENV="${GEMSEARCH_VENV:-$GEMSEARCH_CACHE/venv}"
export GEMSEARCH_CACHE GEMSEARCH_VENV

# gemsearch_env EXTRAS: make $GEMSEARCH_VENV hold this checkout (strict editable) with EXTRAS.
gemsearch_env() {
  local extras="$1" python="${PYTHON:-python3}"
  if ! "$GEMSEARCH_VENV/bin/python" -c "" 2>/dev/null; then
    command -v "$python" >/dev/null || { echo "error: $python not found (Python >= 3.10 needed)" >&2; return 1; }
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
      || { echo "error: $python is older than 3.10" >&2; return 1; }
    echo "==> creating virtual environment $GEMSEARCH_VENV"
    rm -rf "$GEMSEARCH_VENV"
    "$python" -m venv "$GEMSEARCH_VENV" || return 1
    "$GEMSEARCH_VENV/bin/python" -m pip install -q --upgrade pip || return 1
  fi
  echo "==> installing gemsearch[$extras] into $GEMSEARCH_VENV (packages come from pip's cache after the first run)"
  # strict editable: the installed tree mirrors the package layout, so mypy -p gemsearch sees the real package
  # pip's output (setuptools' long notice about strict editable installs) is shown only on failure
  local log; log="$(mktemp)"
  if ! "$GEMSEARCH_VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -e ".[$extras]" --config-settings editable_mode=strict >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
  "$GEMSEARCH_VENV/bin/python" -c "import gemsearch" || return 1
  export PATH="$GEMSEARCH_VENV/bin:$PATH"
}
