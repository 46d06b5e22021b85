"""Generate Python code (messages, gRPC stubs, mypy stubs) from ``protos/``.

Run as ``python -m firstlight.protogen`` (``make protos``). The generated files are committed
under ``services/firstlight/v1``; ``tests/unit/test_protos_fresh.py`` regenerates them into a
temporary directory and fails if they differ, so protos and code cannot drift apart.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
OUTPUT_ROOT = REPO_ROOT / "services"
GENERATED_PACKAGE = OUTPUT_ROOT / "firstlight" / "v1"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "firstlight" / "v1").glob("*.proto"))


def generate(out_root: Path = OUTPUT_ROOT) -> list[Path]:
    """Generate into ``out_root/firstlight/v1`` and return the generated files."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    target = out_root / "firstlight" / "v1"
    # The mypy plugins live next to the interpreter; the venv's bin need not be on PATH.
    bin_dir = Path(sys.executable).parent
    target.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    # protoc resolves relative proto paths against -I; run it from the proto root.
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    (target / "__init__.py").write_text('"""Generated from protos/firstlight/v1 by `make protos`. Do not edit."""\n')
    return sorted(p for p in target.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"})


def main() -> int:
    files = generate()
    print(f"generated {len(files)} files in {GENERATED_PACKAGE.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
