"""Issue 15: the import contracts in pyproject.toml catch a layering break. A copy of the
package gets one planted import per contract (a core importing grpc, a service importing another
service's module, a cycle between two top-level modules), and lint-imports must fail naming each
one. The copy is 2 MB and import-linter reads it in well under a second."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "services")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_a_contract_broken_on_purpose_fails(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    package = tmp_path / "services" / "firstlight"
    shutil.copytree(ROOT / "services" / "firstlight", package, ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    # 1. A core that imports transport.
    (package / "planted").mkdir()
    (package / "planted" / "__init__.py").write_text("")
    (package / "planted" / "core.py").write_text("import grpc\n")
    # 2. A service reaching into another service instead of going through firstlight.clients.
    (package / "search" / "planted_peer.py").write_text("from firstlight.ingestion import core\n")
    # 3. A cycle between two top-level modules.
    (package / "planted_a.py").write_text("import firstlight.planted_b\n")
    (package / "planted_b.py").write_text("import firstlight.planted_a\n")

    result = _lint_imports(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "firstlight.planted.core -> grpc" in out, out
    assert "firstlight.search.planted_peer -> firstlight.ingestion.core" in out, out
    cycles = out[out.index("No cycles are allowed in firstlight") :]
    assert ".planted_a" in cycles or ".planted_b" in cycles, out
