"""The core-purity rule (DESIGN.md): core/ and config.py do no I/O, read no clock, use
no global random and no threads, and import none of the drivers.

Checked statically with `ast`, so a violation fails even in code no test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dynakv

PACKAGE_DIR = Path(dynakv.__file__).resolve().parent
CORE_DIR = PACKAGE_DIR / "core"

# Modules that do I/O, read clocks, spawn threads or processes, or load code dynamically.
FORBIDDEN_MODULES = frozenset({
    "asyncio", "socket", "time", "os", "threading", "uvloop", "aiohttp", "lmdb",
    "subprocess", "signal", "selectors", "multiprocessing", "concurrent", "importlib",
})
# The drivers and the client sit above the core: imports flow one way.
FORBIDDEN_PACKAGES = ("dynakv.net", "dynakv.storage", "dynakv.sim", "dynakv.client",
                      "dynakv.cli")
# `random` may appear only as the type of the Random a driver hands in.
RANDOM_ALLOWED_ATTRIBUTES = frozenset({"Random"})


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def violations(source: str, module: str = "dynakv.core.example",
               is_package: bool = False) -> list[str]:
    """What in `source` breaks the purity rule, one line per offence."""
    tree = ast.parse(source)
    found: list[str] = []
    random_names: set[str] = set()

    def check_module(name: str, line: int) -> None:
        top = name.split(".")[0]
        if top in FORBIDDEN_MODULES:
            found.append(f"line {line}: imports {name}")
        if any(name == pkg or name.startswith(pkg + ".") for pkg in FORBIDDEN_PACKAGES):
            found.append(f"line {line}: imports the driver package {name}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check_module(alias.name, node.lineno)
                if alias.name == "random":
                    random_names.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom):
            base = resolve_from(node, module, is_package)
            check_module(base, node.lineno)
            for alias in node.names:
                check_module(f"{base}.{alias.name}", node.lineno)
                if base == "random" and alias.name not in RANDOM_ALLOWED_ATTRIBUTES:
                    found.append(f"line {node.lineno}: imports random.{alias.name}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__"):
            found.append(f"line {node.lineno}: calls __import__")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
            node.value.id in random_names and node.attr not in RANDOM_ALLOWED_ATTRIBUTES
        ):
            found.append(f"line {node.lineno}: uses the global random.{node.attr}")
    # The module itself passed around as a value would escape the attribute check.
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            if (isinstance(child, ast.Name) and child.id in random_names
                    and not isinstance(node, ast.Attribute)):
                found.append(f"line {child.lineno}: uses the random module as a value")
    return found


def pure_files() -> list[Path]:
    return [*sorted(CORE_DIR.rglob("*.py")), PACKAGE_DIR / "config.py"]


def test_the_core_is_found() -> None:
    names = {path.name for path in pure_files()}
    assert {"ring.py", "claim.py", "dvvset.py", "node.py", "config.py"} <= names


@pytest.mark.parametrize("path", pure_files(), ids=lambda path: path.name)
def test_core_module_is_pure(path: Path) -> None:
    found = violations(path.read_text(encoding="utf-8"), module_name(path),
                       path.name == "__init__.py")
    assert found == [], f"{path.relative_to(PACKAGE_DIR.parent)}: " + "; ".join(found)


# --- the checker itself -----------------------------------------------------------------

PURE = [
    "import heapq\nimport hashlib\nimport msgpack",
    "from dynakv.core import ring\nfrom dynakv.config import Config",
    "from . import dvvset\nfrom .ring import Ring",
    "import random\ndef f(rng: random.Random) -> None: ...",
    "import random\nrng = random.Random(7)\nrng.random()",
    "from random import Random",
    "import random as r\nx: r.Random",
    "from dynakv.core.storage import Storage",
]

IMPURE = [
    "import asyncio",
    "import os.path",
    "from time import monotonic",
    "import time as clock",
    "from threading import Lock",
    "import socket",
    "import lmdb",
    "from subprocess import run",
    "import signal, selectors",
    "import uvloop",
    "from aiohttp import web",
    "import random\nrandom.random()",
    "import random\nrandom.shuffle(items)",
    "import random as r\nr.randint(1, 6)",
    "import random\nrandom.seed(1)",
    "import random\nchoose = random.choice",
    "import random\nuse(random)",
    "from random import choice",
    "from random import Random, shuffle",
    "import dynakv.net.transport",
    "from dynakv.storage import memory",
    "from dynakv import sim",
    "from dynakv.client import Client",
    "from ..net import runtime",
    "from .. import storage",
    "__import__('socket')",
    "import importlib\nimportlib.import_module('socket')",
]


@pytest.mark.parametrize("source", PURE)
def test_checker_accepts(source: str) -> None:
    assert violations(source) == []


@pytest.mark.parametrize("source", IMPURE)
def test_checker_refuses(source: str) -> None:
    assert violations(source) != []
