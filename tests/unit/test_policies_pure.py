"""policies/ stays pure: no faust, no Kafka client, and only the adapter imports river."""

import ast
from pathlib import Path

import pytest

POLICIES = Path(__file__).resolve().parents[2] / "policies"
FORBIDDEN = ("faust", "confluent_kafka", "aiokafka", "kafka", "mode")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


FILES = sorted(POLICIES.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(POLICIES)))
def test_no_streaming_imports(path):
    bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.name} imports {bad}: policies/ must stay pure"


def test_only_the_adapter_imports_river():
    users = {p.name for p in FILES if any(m.split(".")[0] == "river" for m in imported_modules(p))}
    assert users == {"river_adapter.py"}


def test_the_scan_sees_files():
    assert len(FILES) > 10
