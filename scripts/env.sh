# Sourced by the scripts in this folder: creates (once) and updates this checkout's own virtual
# environments, filled from a package cache outside the clone so that torch (several GB) is
# downloaded a single time per machine and a second clone sets up in seconds.
#   GEMSEARCH_CACHE   cache root (default: ~/.cache/gemsearch): uv, its package cache, models, node
#   GEMSEARCH_VENV    the environment to use instead of the script's own (.venv or .venv-dev here)
#   GEMSEARCH_NO_UV   set to 1 to use python -m venv + pip instead of uv
#   PYTHON            interpreter that creates environments (default: python3, >= 3.10)
# Every install is pinned by constraints.txt, so a new release upstream cannot change an environment.

GEMSEARCH_CACHE="${GEMSEARCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemsearch}"
GEMSEARCH_UV_VERSION="0.13.8"
export GEMSEARCH_CACHE
export UV_CACHE_DIR="${UV_CACHE_DIR:-$GEMSEARCH_CACHE/uv-cache}"

_gemsearch_python() {
  local python="${PYTHON:-python3}"
  command -v "$python" >/dev/null || { echo "error: $python not found (Python >= 3.10 needed)" >&2; return 1; }
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "error: $python is older than 3.10" >&2; return 1; }
  command -v "$python"
}

# Prints the path of a pinned uv, installed once into the cache; nothing if it cannot be had.
_gemsearch_uv() {
  [ "${GEMSEARCH_NO_UV:-0}" = "1" ] && return 0
  local tool="$GEMSEARCH_CACHE/uv-$GEMSEARCH_UV_VERSION"
  if [ ! -x "$tool/bin/uv" ]; then
    local python; python="$(_gemsearch_python)" || return 0
    rm -rf "$tool"
    "$python" -m venv "$tool" >/dev/null 2>&1 \
      && "$tool/bin/python" -m pip install -q --disable-pip-version-check "uv==$GEMSEARCH_UV_VERSION" \
        >/dev/null 2>&1 \
      || { rm -rf "$tool"; echo "note: uv could not be installed; using pip" >&2; return 0; }
  fi
  echo "$tool/bin/uv"
}

# gemsearch_env VENV EXTRAS: make VENV (relative to the checkout) hold this checkout, installed in
# strict editable mode (mypy -p gemsearch then sees the real package layout) with EXTRAS.
gemsearch_env() {
  local venv="${GEMSEARCH_VENV:-$PWD/$1}" extras="$2" uv python log
  python="$(_gemsearch_python)" || return 1
  uv="$(_gemsearch_uv)"
  log="$(mktemp)"
  echo "==> gemsearch[$extras] in $venv ($([ -n "$uv" ] && echo "uv, cache $UV_CACHE_DIR" || echo pip))"
  if [ -n "$uv" ]; then
    { "$venv/bin/python" -c "" 2>/dev/null || "$uv" venv -q --python "$python" "$venv"; } >"$log" 2>&1 \
      && "$uv" pip install -q --python "$venv/bin/python" -c constraints.txt \
        -e ".[$extras]" -C editable_mode=strict >>"$log" 2>&1
  else
    { "$venv/bin/python" -c "" 2>/dev/null || "$python" -m venv "$venv"; } >"$log" 2>&1 \
      && "$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt \
        -e ".[$extras]" --config-settings editable_mode=strict >>"$log" 2>&1
  fi
  local rc=$?
  # the installers' output (setuptools' long notice about strict editable installs) only on failure
  [ $rc -eq 0 ] || cat "$log" >&2
  rm -f "$log"
  [ $rc -eq 0 ] || return 1
  "$venv/bin/python" -c "import gemsearch" || return 1
  export GEMSEARCH_VENV_IN_USE="$venv"
  export PATH="$venv/bin:$PATH"
}
