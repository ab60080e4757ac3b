"""The import layering of docs/architecture.md ("Layers"): a module imports only modules of its own layer
or lower ones, wherever the import is written (at the top or inside a function: a lazy import is a
dependency too); imports under `if TYPE_CHECKING:` are annotations, not dependencies. Also: MLflow only
in tracking.py, and the pure modules free of Ray and MLflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lp_ray"

# Lowest first; a module matches the longest prefix listed ("lp_ray.data" covers lp_ray.data.*).
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["lp_ray.errors", "lp_ray.layout", "lp_ray.interrupt"]),
    (
        "pure types and algorithms",
        [
            "lp_ray.spec",
            "lp_ray.stats",
            "lp_ray.rounding",
            "lp_ray.sparsity",
            "lp_ray.pool",  # the package itself
            "lp_ray.pool.methods",
            "lp_ray.pool.chain",
            "lp_ray.imp",
            "lp_ray.imp.retrain",
            "lp_ray.schedules",
            "lp_ray.analysis.compute",
        ],
    ),
    (
        "registries and numerics",
        [
            "lp_ray.data",
            "lp_ray.models",
            "lp_ray.plugins",
            "lp_ray.training",
            "lp_ray.recipes",
            "lp_ray.pool.core",
            "lp_ray.importing.sources",
        ],
    ),
    ("specs and storage", ["lp_ray.spec_loading", "lp_ray.preflight", "lp_ray.store", "lp_ray.lease"]),
    (
        "records and services",
        [
            "lp_ray.opened_run",
            "lp_ray.pool.records",
            "lp_ray.tracking",
            "lp_ray.cluster",
            "lp_ray.submit",
            "lp_ray.progress",
            "lp_ray.analysis.protocol",
        ],
    ),
    ("engines", ["lp_ray.imp.loop", "lp_ray.pool.executors", "lp_ray.pool.search", "lp_ray.report.run"]),
    (
        "commands",
        ["lp_ray.imp.command", "lp_ray.pool.command", "lp_ray.evaluate", "lp_ray.importing", "lp_ray.report"],
    ),
    ("analyses", ["lp_ray.analysis"]),
    (
        "experiments",
        ["lp_ray.experiment", "lp_ray.experiment.spec", "lp_ray.report.experiment", "lp_ray.report.command"],
    ),
    ("sweep", ["lp_ray.experiment.sweep"]),
    ("Python API", ["lp_ray.api"]),
    ("command line", ["lp_ray.cli"]),
    # The package itself: `import lp_ray` hands out the API's functions (imported when first used).
    ("package", ["lp_ray"]),
]
LAYER_OF = {prefix: i for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}

PURE = [
    "lp_ray.spec",
    "lp_ray.stats",
    "lp_ray.sparsity",
    "lp_ray.pool.methods",
    "lp_ray.pool.chain",
    "lp_ray.pool.core",
    "lp_ray.training",
    "lp_ray.recipes",
    "lp_ray.schedules",
    "lp_ray.imp.retrain",
    "lp_ray.analysis.compute",
    "lp_ray.layout",
]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer(module: str) -> int:
    if module == "lp_ray":
        return LAYER_OF["lp_ray"]
    parts = module.split(".")
    for n in range(len(parts), 1, -1):  # a module of the package is in a layer by its own name
        if ".".join(parts[:n]) in LAYER_OF:
            return LAYER_OF[".".join(parts[:n])]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module `path` imports, at any depth of its code, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:  # `from lp_ray.analysis.compute import lmc` imports a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


ALL = modules()


@pytest.mark.parametrize("module", sorted(ALL))
def test_a_module_imports_nothing_from_a_higher_layer(module):
    mine = layer(module)
    higher = sorted(
        f"{m} (layer '{LAYERS[layer(m)][0]}')"
        for m in imports(ALL[module], set(ALL))
        if m.split(".")[0] == "lp_ray" and layer(m) > mine
    )
    assert not higher, f"{module} (layer '{LAYERS[mine][0]}') imports {', '.join(higher)}"


def test_only_tracking_imports_mlflow_and_pure_modules_import_neither_ray_nor_mlflow():
    """MLflow is lp_ray.tracking's alone (its package); the pure modules need neither Ray nor MLflow."""
    for module, path in ALL.items():
        third_party = {m.split(".")[0] for m in imports(path, set(ALL))}
        if module.split(".")[:2] != ["lp_ray", "tracking"]:
            assert "mlflow" not in third_party, module
        if any(module == p or module.startswith(p + ".") for p in PURE):
            assert not third_party & {"ray", "mlflow"}, module


def test_the_layering_test_fails_on_an_upward_import(tmp_path):
    """The check itself can fail: a lower module that imports a higher one is caught."""
    fake = tmp_path / "spec.py"
    fake.write_text("def f():\n    from lp_ray.cli import main\n")
    assert any(layer(m) > layer("lp_ray.spec") for m in imports(fake, set(ALL)) if m.startswith("lp_ray"))


def test_no_module_imports_itself_through_others():
    """No import cycles, lazy imports included (`import lp_ray` handing out the API's names aside): the
    layer table allows a cycle inside one layer; this does not."""
    graph = {m: {i for i in imports(p, set(ALL)) if i in ALL and i not in (m, "lp_ray")} for m, p in ALL.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                cycle = path[path.index(other) :] + [other]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if other not in state:
                visit(other, path + [other])
        state[module] = "done"

    for module in sorted(graph):
        if module != "lp_ray" and module not in state:
            visit(module, [module])
