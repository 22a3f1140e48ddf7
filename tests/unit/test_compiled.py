"""The mypyc-compiled policy modules (``make compile``): used only when every one is current, and
deciding exactly as the source does."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shunter.policies as policies
from shunter.policies import COMPILED, compiled_state


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    """A fake policies/ folder: every compiled module's source, and a plugin."""
    (tmp_path / "plugins").mkdir()
    for name in COMPILED:
        (tmp_path / f"{name}.py").write_text("")
    (tmp_path / "plugins" / "__init__.py").write_text("")
    (tmp_path / "plugins" / "fit.py").write_text("")
    return tmp_path


def compile_all(package: Path) -> list[Path]:
    suffix = ".cpython-311-x86_64-linux-gnu.so" if sys.platform == "linux" else ".so"
    built = [package / f"{n}{suffix}" for n in COMPILED] + [package / "plugins" / f"fit{suffix}"]
    later = time.time() + 5
    for path in built:
        path.write_bytes(b"")
        os.utime(path, (later, later))
    return built


def test_nothing_compiled_runs_from_source(package: Path):
    assert compiled_state(str(package), {}) == "source"


def test_every_module_compiled_and_newer_than_its_source(package: Path):
    compile_all(package)
    assert compiled_state(str(package), {}) == "compiled"
    assert compiled_state(str(package), {"SHUNTER_PURE_PYTHON": "1"}) == "source"


def test_a_source_edited_after_compiling_sends_every_module_to_source(package: Path):
    compile_all(package)
    later = time.time() + 60
    os.utime(package / "cell.py", (later, later))
    assert compiled_state(str(package), {}) == f"stale: {package.name}/cell.py changed after it was compiled"


def test_a_module_added_after_compiling_sends_every_module_to_source(package: Path):
    compile_all(package)
    (package / "plugins" / "newer.py").write_text("")
    assert compiled_state(str(package), {}).startswith(f"stale: {package.name}/plugins/newer.py has no compiled")


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="make test compiles; a bare pytest may not have")
def test_ci_runs_the_compiled_modules():
    import shunter.policies.cell as cell

    assert policies.MODE == "compiled", policies.MODE
    assert cell.__file__.endswith(".so")


def test_compiled_and_source_decide_the_same():
    """Whatever this process runs, a subprocess with SHUNTER_PURE_PYTHON=1 runs the source; the two
    must agree on every field but the speed (where nothing is compiled, both are the source)."""
    args = [sys.executable, "-m", "shunter.connectors.cli", "simulate", "--workload", "seed-mix", "--tasks", "1500",
            "--strategy", "adaptive", "--utilization", "0.9", "--seed", "4", "--json"]
    docs = []
    for pure in ("0", "1"):
        out = subprocess.run(args, env={**os.environ, "SHUNTER_PURE_PYTHON": pure}, capture_output=True, text=True,
                             check=True, timeout=300).stdout
        doc = json.loads(out)
        for row in doc["strategies"].values():
            row.pop("decisions_per_s")
        docs.append(doc)
    assert docs[0] == docs[1]
    assert docs[0]["strategies"]["adaptive"]["completed"] == 1500
