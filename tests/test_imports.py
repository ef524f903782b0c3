"""No import circle in trainer/ + olharness/, counting imports inside functions too: a lazy import that
closes a circle only hides it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.glob("trainer/**/*.py")) + sorted(ROOT.glob("olharness/**/*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def targets(cur: str, node, mods: dict) -> set[str]:
    """The project modules one import statement runs. `from pkg import sub` inside pkg also names pkg
    itself (its __init__ is still running when the submodule asks for it)."""
    def known(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name
    if isinstance(node, ast.Import):
        return {known(a.name) for a in node.names} - {""}
    base = node.module or ""
    if node.level:
        pkg = cur if mods[cur].name == "__init__.py" else cur.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
    out = set()
    for a in node.names:
        full = f"{base}.{a.name}"
        out |= {full, base} if full in mods and cur.startswith(base + ".") else {full} if full in mods else {known(base)}
    return out - {"", cur}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: set().union(*[targets(m, n, mods) for n in ast.walk(ast.parse(p.read_text()))
                             if isinstance(n, (ast.Import, ast.ImportFrom))]) for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t, path + [t])):
                return found
        state[m] = 2
        return None
    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle():
    graph = import_graph()
    assert "trainer.checkpoint" in graph["trainer.start"]  # the graph is real
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
