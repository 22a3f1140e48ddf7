"""Pure decision logic: no faust, no Kafka client. Plain data in, decisions with explanations out.

The hot modules may be compiled by mypyc (``make compile``, ``tools/compile_policies.py``) into
C extensions beside their sources. The ``.py`` files stay the truth: unless every compiled module
is present and newer than its source, all of them run from source (a compiled group cannot mix
with edited source: its classes are built into one shared library), and so they do with
``SHUNTER_PURE_PYTHON=1``.
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from types import ModuleType
from typing import Mapping, Sequence

_HERE = os.path.dirname(os.path.abspath(__file__))

COMPILED = ("audit", "circuit", "document", "errors", "model", "placement", "queueing", "strategies",
            "learners", "cell")
"""The modules ``tools/compile_policies.py`` compiles, besides every plugin (not the plugins
package's ``__init__``). Not compiled: the simulator, workloads and the River adapter (glue
around the cell, or River's own Python)."""


def compiled_modules(package_dir: str = _HERE) -> list[str]:
    """Names under this package of every module that is compiled: ``cell``, ``plugins.fit``..."""
    plugins = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(package_dir, "plugins", "*.py")))
    return list(COMPILED) + [f"plugins.{m}" for m in plugins if m != "__init__"]


def _extension(source: str) -> str | None:
    base = source[:-3]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            return base + suffix
    return None


def compiled_state(package_dir: str = _HERE, environ: Mapping[str, str] = os.environ) -> str:
    """"compiled", "source" (nothing compiled, or ``SHUNTER_PURE_PYTHON=1``), or "stale: <why>"."""
    sources = [os.path.join(package_dir, *m.split(".")) + ".py" for m in compiled_modules(package_dir)]
    extensions = [_extension(s) for s in sources]
    if environ.get("SHUNTER_PURE_PYTHON") == "1" or not any(extensions):
        return "source"
    for src, ext in zip(sources, extensions):
        rel = os.path.relpath(src, os.path.dirname(package_dir))
        if ext is None:
            return f"stale: {rel} has no compiled module"
        if os.path.getmtime(src) > os.path.getmtime(ext):
            return f"stale: {rel} changed after it was compiled"
    return "compiled"


class _FromSource(importlib.abc.MetaPathFinder):
    """Loads this package's modules from their ``.py`` files, never a compiled extension."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        prefix = __name__ + "."
        if not fullname.startswith(prefix):
            return None
        source = os.path.join(_HERE, *fullname[len(prefix):].split(".")) + ".py"
        if not os.path.exists(source):
            return None  # a package (plugins/__init__.py) or not ours: the normal finders
        return importlib.util.spec_from_file_location(fullname, source)


MODE = compiled_state()
if MODE != "compiled":
    sys.meta_path.insert(0, _FromSource())
    if MODE.startswith("stale"):
        warnings.warn(f"shunter.policies run from source ({MODE[7:]}); `make compile` rebuilds the "
                      "compiled modules, about twice as fast", RuntimeWarning, stacklevel=2)
