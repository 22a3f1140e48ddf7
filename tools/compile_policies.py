"""Compile the scheduler's hot policy modules with mypyc (part of mypy): ``make compile``.

The policy code is plain, type-checked Python; mypyc turns the modules below into C extensions
that run the same code about twice as fast (docs/benchmarks/quality.md, "Session 8: compiled
policy code"; docs/decisions.md).
Nothing else changes: the ``.py`` files stay the source of truth, and
``shunter/policies/__init__.py`` runs them from source whenever a compiled module is missing,
older than its source, or ``SHUNTER_PURE_PYTHON=1`` is set.

Usage (from the repository root): ``python tools/compile_policies.py`` builds the extensions
next to their sources (``policies/*.so``, ignored by git); ``--clean`` removes them.

mypyc names a module by its path, so it compiles a staging tree spelled the way the package is
installed (``build/compile/shunter/policies`` is a link to ``policies/``), as ``make typecheck``
does for mypy.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import warnings

with warnings.catch_warnings():  # "running from source": the reason to be here
    warnings.simplefilter("ignore")
    from shunter.policies import compiled_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE = os.path.join(ROOT, "build", "compile")

GROUP = "shunter.policies.compiled"
"""One shared library for the group: ``policies/compiled__mypyc.*.so``."""


def sources() -> list[str]:
    return [f"shunter/policies/{m.replace('.', '/')}.py" for m in compiled_modules()]


def built() -> list[str]:
    return (glob.glob(os.path.join(ROOT, "policies", "*.so"))
            + glob.glob(os.path.join(ROOT, "policies", "plugins", "*.so")))


def clean() -> None:
    for path in built():
        os.remove(path)
    shutil.rmtree(STAGE, ignore_errors=True)


def stage() -> None:
    shutil.rmtree(STAGE, ignore_errors=True)
    os.makedirs(os.path.join(STAGE, "shunter"))
    shutil.copy(os.path.join(ROOT, "shunter", "__init__.py"), os.path.join(STAGE, "shunter"))
    for folder in ("schemas", "streams", "agents", "policies", "connectors"):
        os.symlink(os.path.join(ROOT, folder), os.path.join(STAGE, "shunter", folder))


SETUP = """
from setuptools import setup
from mypyc.build import mypycify
setup(name="shunter-policies-compiled", packages=[],
      ext_modules=mypycify({paths!r}, group_name={group!r}, opt_level="3"))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules and run from source")
    args = ap.parse_args()
    clean()
    if args.clean:
        print("compiled policy modules removed: the policies run from source")
        return 0
    stage()
    paths = sources()
    print(f"compiling {len(paths)} policy modules with mypyc (about half a minute)...", flush=True)
    setup = os.path.join(STAGE, "setup_compiled.py")
    with open(setup, "w") as f:
        f.write(SETUP.format(paths=paths, group=GROUP))
    env = dict(os.environ, MYPY_FORCE_COLOR="0")
    proc = subprocess.run([sys.executable, "setup_compiled.py", "build_ext", "--inplace"], cwd=STAGE, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
        clean()
        print("mypyc failed (above); the policies run from source", file=sys.stderr)
        return proc.returncode
    # build_ext --inplace wrote the extensions through the link, next to their sources.
    print(f"compiled {len(built()) - 1} modules into policies/ (SHUNTER_PURE_PYTHON=1 runs the source instead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
