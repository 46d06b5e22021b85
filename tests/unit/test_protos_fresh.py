"""Generated code must match protos/: regenerate into a temp dir and compare byte for byte."""

from pathlib import Path

from firstlight import protogen


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    fresh = {p.name: p.read_bytes() for p in protogen.generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in protogen.GENERATED_PACKAGE.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"}}
    assert fresh.keys() == committed.keys(), "generated file set differs: run `make protos`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code (run `make protos`): {stale}"


def test_every_rpc_and_message_is_commented() -> None:
    for proto in protogen.proto_files():
        lines = proto.read_text().splitlines()
        for n, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith(("rpc ", "message ", "service ", "enum ")):
                previous = lines[n - 1].strip()
                assert previous.startswith("//"), f"{proto.name}:{n + 1} lacks a comment: {stripped}"
