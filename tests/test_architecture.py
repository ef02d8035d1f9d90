"""The layering of docs/architecture.md, enforced: no import cycles, arrows one way, torch only on the torch side.

Imports are read from the source (every ``import`` statement, inside functions too; ``if TYPE_CHECKING:`` blocks
are skipped since they never run).
"""

import ast
from collections import defaultdict
from pathlib import Path

import gptrl

ROOT = Path(gptrl.__file__).parent

# Which gptrl components each component may import (itself always). The top-level package is lazy and may name
# anything; the CLI and training sit on top.
ALLOWED = {
    "gptrl.errors": set(),
    "gptrl.fileio": {"gptrl.errors"},
    "gptrl.synthetic": set(),
    "gptrl.envs": set(),
    "gptrl.provenance": {"gptrl"},
    "gptrl.bundle": {"gptrl", "gptrl.errors", "gptrl.fileio"},
    "gptrl.contract": {"gptrl.bundle"},
    "gptrl.rollout": {"gptrl.errors", "gptrl.bundle", "gptrl.contract"},
    "gptrl.families": {"gptrl.errors", "gptrl.bundle"},
    "gptrl.graph": {"gptrl.errors", "gptrl.fileio", "gptrl.bundle"},
    "gptrl.runtime": {"gptrl.errors", "gptrl.fileio", "gptrl.bundle", "gptrl.contract", "gptrl.rollout",
                      "gptrl.families"},
    "gptrl.evaluation": {"gptrl.errors", "gptrl.bundle", "gptrl.contract", "gptrl.envs"},
    "gptrl.executor": {"gptrl.errors", "gptrl.fileio"},
    "gptrl.exporter": {"gptrl", "gptrl.errors", "gptrl.fileio", "gptrl.synthetic", "gptrl.bundle", "gptrl.contract",
                       "gptrl.rollout", "gptrl.families", "gptrl.graph", "gptrl.runtime", "gptrl.evaluation"},
    "gptrl.training": {"gptrl", "gptrl.errors", "gptrl.fileio", "gptrl.synthetic", "gptrl.bundle", "gptrl.contract",
                       "gptrl.rollout", "gptrl.families", "gptrl.graph", "gptrl.runtime", "gptrl.evaluation",
                       "gptrl.exporter", "gptrl.record", "gptrl.cli", "gptrl.provenance", "gptrl.envs",
                       "gptrl.executor"},
    "gptrl.record": {"gptrl.fileio", "gptrl.bundle", "gptrl.contract", "gptrl.runtime", "gptrl.exporter",
                     "gptrl.envs"},
    "gptrl.web": {"gptrl", "gptrl.errors", "gptrl.fileio", "gptrl.synthetic", "gptrl.bundle", "gptrl.rollout",
                  "gptrl.families", "gptrl.graph", "gptrl.runtime"},
    "gptrl.cli": {"gptrl", "gptrl.errors", "gptrl.fileio", "gptrl.bundle", "gptrl.contract", "gptrl.rollout",
                  "gptrl.families", "gptrl.runtime", "gptrl.evaluation", "gptrl.exporter", "gptrl.record",
                  "gptrl.provenance", "gptrl.envs", "gptrl.executor", "gptrl.web"},
}
# Third-party packages that only some components may import.
RESTRICTED = {
    "torch": {"gptrl.exporter", "gptrl.training"},
    "onnx": {"gptrl.graph", "gptrl.exporter", "gptrl.training"},
    "onnxruntime": {"gptrl.runtime", "gptrl.exporter", "gptrl.training"},
    "stable_baselines3": {"gptrl.training"},
    "sb3_contrib": {"gptrl.training"},
    "minari": {"gptrl.training"},
    "transformers": set(),
    "ray": {"gptrl.executor"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def component(module: str) -> str:
    if module == "gptrl":
        return "gptrl"
    return ".".join(module.split(".")[:2])


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(module: str) -> set[str]:
    """Every module ``module`` imports (gptrl submodules resolved; third-party by top-level name)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            for alias in node.names:  # `from gptrl.bundle import writer` imports a submodule
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


GRAPH = {m: {i for i in imports_of(m) if i in MODULES and i != m} for m in MODULES}


def test_every_module_belongs_to_a_known_component():
    unknown = sorted({component(m) for m in MODULES} - set(ALLOWED) - {"gptrl"})
    assert not unknown, f"add these components to docs/architecture.md and ALLOWED: {unknown}"


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in sorted(GRAPH):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_arrows_run_one_way():
    wrong = defaultdict(set)
    for module, targets in GRAPH.items():
        here = component(module)
        if here == "gptrl":
            continue
        for target in targets:
            there = component(target)
            if there != here and there not in ALLOWED[here]:
                wrong[module].add(target)
    assert not wrong, f"imports against the dependency rule of docs/architecture.md: {dict(wrong)}"


def test_heavy_packages_stay_on_their_side():
    wrong = defaultdict(set)
    for module in MODULES:
        for name in imports_of(module):
            top = name.split(".")[0]
            if top in RESTRICTED and component(module) not in RESTRICTED[top]:
                wrong[module].add(name)
    assert not wrong, f"third-party imports outside their side: {dict(wrong)}"


def test_the_checker_sees_imports_inside_functions():
    """Guard against a checker that silently reads nothing: known function-level imports must be found."""
    assert "gptrl.exporter.load" in imports_of("gptrl.cli")
    assert "torch" in imports_of("gptrl.exporter.legacy")


def test_top_level_names_are_the_lazy_ones():
    assert sorted(gptrl.__all__) == sorted([*gptrl._LAZY, "__version__"])
    for name in gptrl._LAZY:
        assert getattr(gptrl, name) is not None
