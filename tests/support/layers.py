"""The layer contract of the project's packages, checked from the source (no imports run).

    dags, lake            the face: CLI, local services, orchestration, lifecycle
      > beam_pipelines    every Beam pipeline
      > quality           the gates (never imports beam_pipelines)
      > lake_core         the ground floor
      > lake_schemas      the contract
    edge_client > lake_schemas   (the device side: installs without the lake)

A package may import only the packages listed for it in ``ALLOWED``; nothing
imports ``dags`` or the CLI (``lake.cli``, ``lake.commands``) but the CLI
itself. Imports inside functions count like any other.

A function-local import of one of our modules needs a reason: it must keep a
heavy library (Beam, deltalake, Great Expectations, DuckDB, Airflow, pandas)
off the importing module's import path. One that brings nothing heavy its
module does not already import is a hidden cycle or an oversight:
``local_import_violations`` names it.
"""

from __future__ import annotations

import ast
import pathlib
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["ALLOWED", "HEAVY", "Import", "imports_of", "layer_violations", "local_import_violations"]

ALLOWED: dict[str, set[str]] = {
    "lake_schemas": set(),
    "lake_core": {"lake_schemas"},
    "edge_client": {"lake_schemas"},
    "quality": {"lake_core", "lake_schemas"},
    "beam_pipelines": {"quality", "lake_core", "lake_schemas"},
    "lake": {"beam_pipelines", "quality", "lake_core", "lake_schemas", "edge_client"},
    "dags": {"lake", "lake_core", "lake_schemas"},
}
#: Modules only the CLI may import.
CLI_ONLY = ("lake.cli", "lake.commands")
#: Third-party modules whose import costs seconds or pulls in a world (pyarrow.dataset imports pandas).
HEAVY = frozenset(
    {"apache_beam", "deltalake", "great_expectations", "duckdb", "airflow", "pandas", "sqlalchemy", "pyarrow.dataset"}
)


def _heavy_name(module: str) -> str | None:
    """The ``HEAVY`` entry ``module`` is or lies in, else None."""
    return next((h for h in HEAVY if module == h or module.startswith(h + ".")), None)


@dataclass(frozen=True)
class Import:
    path: pathlib.Path  # the importing file
    line: int
    module: str  # absolute
    local: bool  # inside a function


def _module_name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(root: pathlib.Path, path: pathlib.Path) -> list[Import]:
    """Every import statement of ``path``, resolved to absolute module names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(root, path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    local_nodes = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(fn)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # ``from pkg import mod`` imports pkg.mod when it is a module of ours
            names = [base] + [f"{base}.{a.name}" for a in node.names if _is_module(root, f"{base}.{a.name}")]
        else:
            continue
        found += [Import(path, node.lineno, name, id(node) in local_nodes) for name in names]
    return found


def _is_module(root: pathlib.Path, name: str) -> bool:
    rel = pathlib.Path(*name.split("."))
    return (root / rel).with_suffix(".py").exists() or (root / rel / "__init__.py").exists()


def _files(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for package in ALLOWED for p in (root / package).rglob("*.py") if (root / package).is_dir())


def layer_violations(root: pathlib.Path) -> list[str]:
    """Every import that breaks ``ALLOWED`` or ``CLI_ONLY``, as ``file:line: why``."""
    problems = []
    for path in _files(root):
        importer = _module_name(root, path)
        package = importer.split(".")[0]
        for imp in imports_of(root, path):
            target = imp.module.split(".")[0]
            where = f"{path.relative_to(root)}:{imp.line}"
            if target in ALLOWED and target != package and target not in ALLOWED[package]:
                problems.append(f"{where}: {package} may not import {imp.module} ({target})")
            if imp.module.startswith(CLI_ONLY) and not importer.startswith(CLI_ONLY):
                problems.append(f"{where}: only the CLI imports {imp.module}")
    return problems


def _first_party(root: pathlib.Path, module: str) -> bool:
    return module.split(".")[0] in ALLOWED and _is_module(root, module)


def _source(root: pathlib.Path, module: str) -> pathlib.Path:
    rel = pathlib.Path(*module.split("."))
    plain = (root / rel).with_suffix(".py")
    return plain if plain.exists() else root / rel / "__init__.py"


def heavy_imports(root: pathlib.Path, module: str) -> frozenset[str]:
    """The heavy libraries that importing ``module`` loads (module-level imports, followed through ours)."""
    return _heavy(root.resolve(), module)


@lru_cache(maxsize=None)
def _direct(root: pathlib.Path, module: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """What ``module``'s own top-level imports load: heavy libraries, and modules of ours."""
    heavy: set[str] = set()
    ours: list[str] = []
    for imp in imports_of(root, _source(root, module)):
        if imp.local:
            continue
        heavy_name = _heavy_name(imp.module)
        if heavy_name is not None:
            heavy.add(heavy_name)
        elif _first_party(root, imp.module):
            ours.append(imp.module)
    return frozenset(heavy), tuple(ours)


@lru_cache(maxsize=None)
def _heavy(root: pathlib.Path, module: str) -> frozenset[str]:
    # Every module of ours that importing ``module`` runs (importing a.b.c runs a and a.b first), each
    # parsed once: a walk that re-parsed along every import path took a minute over the tree.
    heavy: set[str] = set()
    seen: set[str] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            if name in seen or not _is_module(root, name):
                continue
            seen.add(name)
            direct_heavy, ours = _direct(root, name)
            heavy |= direct_heavy
            todo.extend(ours)
    return frozenset(heavy)


def local_import_violations(root: pathlib.Path) -> list[str]:
    """Function-local imports of our modules that keep nothing heavy off their module's import path."""
    problems = []
    for path in _files(root):
        importer = _module_name(root, path)
        already = heavy_imports(root, importer)
        for imp in imports_of(root, path):
            if not imp.local or not _first_party(root, imp.module):
                continue
            if not heavy_imports(root, imp.module) - already:
                problems.append(
                    f"{path.relative_to(root)}:{imp.line}: {imp.module} is imported inside a function but "
                    f"brings no heavy library {importer} lacks: import it at the top"
                )
    return problems
