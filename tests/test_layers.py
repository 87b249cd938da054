"""The layer rules of docs/architecture.md that a grep can check (import-linter checks the rest)."""

import ast
from pathlib import Path

RAFT = Path(__file__).resolve().parent.parent / "graft" / "raft"
FORBIDDEN = {"asyncio", "socket", "time", "random", "os", "threading", "uvloop", "selectors"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_raft_core_imports_no_io_clock_randomness_or_threads() -> None:
    sources = sorted(RAFT.rglob("*.py"))
    assert sources, "graft/raft has no modules"
    offenders = {p.name: imported_roots(p) & FORBIDDEN for p in sources}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_import_check_sees_a_planted_import(tmp_path: Path) -> None:
    planted = tmp_path / "bad.py"
    planted.write_text("import os\nfrom time import monotonic\n")
    assert imported_roots(planted) & FORBIDDEN == {"os", "time"}
