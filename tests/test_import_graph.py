"""The package's import graph, read from the source (ast): no circles, even through imports inside functions; the
trainer does not import the analysis package (the logging callback loads the token view lazily, only when one is
due); the top-level ``rewards`` package depends on nothing in ``attncredit``."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("attncredit", "rewards")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _statements(tree: ast.Module, lazy: bool):
    """Import statements at module level, and with ``lazy`` also those inside functions (not TYPE_CHECKING)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif lazy or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, modules: dict[str, Path], lazy: bool) -> set[str]:
    """Modules of ours that ``name`` imports (at module level; with ``lazy`` also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _statements(ast.parse(path.read_text()), lazy):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        out |= {t for t in targets if t in modules and t != name}
    return out


MODULES = _modules()
GRAPH = {name: _imports(name, path, MODULES, lazy=True) for name, path in MODULES.items()}
EAGER = {name: _imports(name, path, MODULES, lazy=False) for name, path in MODULES.items()}


def _reachable(start: str, graph=GRAPH) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_is_read():
    assert "attncredit.attention.recording" in EAGER["attncredit.trainer"]
    assert "attncredit.credit" in EAGER["attncredit.trainer"]
    assert "attncredit.analysis.token_view" in GRAPH["attncredit.callbacks"] - EAGER["attncredit.callbacks"]


def test_no_module_imports_itself_through_others():
    cycles = sorted(name for name in GRAPH if name in _reachable(name))
    assert not cycles, f"import circles through: {cycles}"


def test_trainer_does_not_import_the_analysis_package():
    direct = sorted(m for m in GRAPH["attncredit.trainer"] if m.startswith("attncredit.analysis"))
    assert not direct, f"attncredit.trainer imports {direct}"
    loaded = sorted(m for m in _reachable("attncredit.trainer", EAGER) if m.startswith("attncredit.analysis"))
    assert not loaded, f"importing attncredit.trainer loads {loaded}"


def test_rewards_imports_nothing_from_attncredit():
    for name in GRAPH:
        if name.split(".")[0] == "rewards":
            reached = sorted(m for m in _reachable(name) if m.startswith("attncredit"))
            assert not reached, f"{name} reaches {reached}"
