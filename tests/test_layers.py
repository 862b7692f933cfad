"""The package's layers, checked from the source: imports point one way, modules stay small.

cli -> app -> engine, io; engine and io never import each other; kernels import only numpy,
numba and each other; config (with its sections), errors and schema (shared by every layer)
import no layer; the CLI's option types import no layer either.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rlreco"
#: Lines a module may hold: one over this is usually two jobs in one room.
MAX_LINES = 550
#: Modules allowed over it, each capped where it stands so it cannot grow (none today: every
#: module that was over has been split).
OVERSIZE: dict[str, int] = {}
#: Standard-library modules a kernel may use besides numpy and numba (typing only, no I/O).
KERNEL_STDLIB = {"__future__", "typing", "collections", "math"}
#: The one kept intrinsic (issue: only if bench/ shows > 10%, with a pure-Python twin) builds
#: its LLVM call with llvmlite, numba's own code generator.
KERNEL_EXTRA = {"rlreco.engine.kernels.prefetch": {"llvmlite"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_name(path).rsplit(".", node.level)[0]
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


#: (layer, layers it must not import)
FORBIDDEN = [
    ("rlreco.engine", ("rlreco.io", "rlreco.app", "rlreco.cli")),
    ("rlreco.io", ("rlreco.engine", "rlreco.app", "rlreco.cli")),
    ("rlreco.app", ("rlreco.cli",)),
    ("rlreco.config", ("rlreco.engine", "rlreco.io", "rlreco.app", "rlreco.cli")),
    ("rlreco.config_sections", ("rlreco.engine", "rlreco.io", "rlreco.app", "rlreco.cli")),
    # option types only: the CLI's logic lives in the application layer
    ("rlreco.cli_options", ("rlreco.engine", "rlreco.io", "rlreco.app", "rlreco.cli")),
    ("rlreco.errors", ("rlreco.engine", "rlreco.io", "rlreco.app", "rlreco.cli", "rlreco.config")),
    ("rlreco.schema", ("rlreco.engine", "rlreco.io", "rlreco.app", "rlreco.cli", "rlreco.config")),
]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module: str) -> None:
    found = imports(MODULES[module])
    for layer, forbidden in FORBIDDEN:
        if within(module, layer):
            wrong = sorted(i for i in found if any(within(i, f) for f in forbidden))
            assert not wrong, f"{module} ({layer}) imports {', '.join(wrong)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if within(m, "rlreco.engine.kernels")))
def test_kernels_import_only_numpy_numba_and_kernels(module: str) -> None:
    allowed_roots = {"numpy", "numba"} | KERNEL_STDLIB | KERNEL_EXTRA.get(module, set())
    wrong = sorted(
        i
        for i in imports(MODULES[module])
        if i.split(".")[0] not in allowed_roots and not within(i, "rlreco.engine.kernels")
    )
    assert not wrong, f"{module} imports {', '.join(wrong)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    cap = OVERSIZE.get(module, MAX_LINES)
    assert lines <= cap, f"{module} has {lines} lines (at most {cap})"


def test_no_top_level_io_package_shadows_the_standard_library() -> None:
    assert not (PACKAGE.parent / "io").exists()
    assert "io" in sys.stdlib_module_names


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    # the import walk must find lazy and relative imports, or the checks above prove nothing
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from rlreco.io import run_dir\n    import numba.core\n")
    assert imports(source) == {"rlreco.io", "numba.core"}
