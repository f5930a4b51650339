"""Running Python code as on a base install: a subprocess in which torch cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

BLOCKED = ("torch", "torchvision", "torchaudio")

# put before the code: a finder that refuses torch and its companions, as if they were not installed
_BLOCKER = f"""
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: a base install)", name=name)
        return None
sys.meta_path.insert(0, _NoTorch())
"""
# put after it: proof that nothing reached torch another way
_CHECK = f"""
import sys as _sys
_loaded = [m for m, v in _sys.modules.items() if m.partition(".")[0] in {BLOCKED!r} and v is not None]
assert not _loaded, f"torch modules loaded: {{_loaded}}"
"""


def run_without_torch(
    code: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing torch fails; the run fails if any torch
    module got loaded all the same."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})}
    program = f"{_BLOCKER}\n{code}\n{_CHECK}"
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=full_env, timeout=timeout
    )
