"""The rooms of the library and what each may import (docs/architecture.md), checked on the source with ``ast``.

Every ``import`` counts, at module level and inside functions (lazy imports are still dependencies):
no import cycle inside ``cbedtdc``, every import goes to a room of the same or a lower layer, the pure
rooms (``metrics``, ``plots``, ``crystallography``, ``cascade.plan``, ``cascade.routing``) import no torch, h5py or
xgboost at all, and nothing imports Snakemake.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO

LIB = REPO / "cbedtdc"

#: Layers, lowest first; a module may import modules of its own layer or a lower one.
#: A new module goes here and into the table of docs/architecture.md.
LAYERS = [
    # base: file formats, class sets, config, pure scores, calibration, the network pieces
    ["cbedtdc", "cbedtdc.errors", "cbedtdc.io", "cbedtdc.layout", "cbedtdc.mirror", "cbedtdc.classes", "cbedtdc.config", "cbedtdc.cluster",
     "cbedtdc.crystallography", "cbedtdc.metrics", "cbedtdc.calibration", "cbedtdc.losses", "cbedtdc.model",
     "cbedtdc.distributed"],
    # data: generator, shards, the dataset, figures from tables
    ["cbedtdc.synth", "cbedtdc.synth.scattering", "cbedtdc.synth.crystal", "cbedtdc.synth.zone_axes",
     "cbedtdc.synth.render", "cbedtdc.synth.multislice", "cbedtdc.synth.generate", "cbedtdc.synth.gallery", "cbedtdc.preprocess",
     "cbedtdc.data", "cbedtdc.data.formats", "cbedtdc.data.manifest", "cbedtdc.data.splits",
     "cbedtdc.data.shard_index", "cbedtdc.data.dataset", "cbedtdc.plots", "cbedtdc.fetch", "cbedtdc.perturb",
     "cbedtdc.plots_robustness"],
    # one classifier, and the cascade's pure logic
    ["cbedtdc.train", "cbedtdc.train.options", "cbedtdc.train.sampling", "cbedtdc.train.checkpoint",
     "cbedtdc.train.infer", "cbedtdc.train.job", "cbedtdc.train.outputs", "cbedtdc.train.engine", "cbedtdc.cascade.plan", "cbedtdc.cascade.routing",
     "cbedtdc.cascade.routing.core", "cbedtdc.cascade.routing.rules"],
    # feature sources: their registry, a backbone's activations, the physics descriptors, several joined by key
    ["cbedtdc.features", "cbedtdc.features.registry", "cbedtdc.features.spec", "cbedtdc.features.store",
     "cbedtdc.features.cnn", "cbedtdc.features.sources", "cbedtdc.features.symmetry",
     "cbedtdc.features.symmetry.params", "cbedtdc.features.symmetry.plan", "cbedtdc.features.symmetry.centre",
     "cbedtdc.features.symmetry.descriptors"],
    # heads on features
    ["cbedtdc.heads", "cbedtdc.heads.options", "cbedtdc.heads.booster", "cbedtdc.heads.resample",
     "cbedtdc.heads.mlp", "cbedtdc.heads.head", "cbedtdc.heads.jobs"],
    # cascades of trained models
    ["cbedtdc.cascade", "cbedtdc.cascade.jobs", "cbedtdc.cascade.shared", "cbedtdc.cascade.load"],
    # a whole run
    ["cbedtdc.evaluate", "cbedtdc.evaluate.variants", "cbedtdc.evaluate.score", "cbedtdc.evaluate.tables",
     "cbedtdc.evaluate.crystal", "cbedtdc.evaluate.replicates", "cbedtdc.evaluate.tune",
     "cbedtdc.evaluate.run", "cbedtdc.evaluate.robustness", "cbedtdc.evaluate.transfer", "cbedtdc.classify"],
    # entry points
    ["cbedtdc.cli", "cbedtdc.cliutil", "cbedtdc.runstate", "cbedtdc.dag", "cbedtdc.checks"],
]
#: Packages whose new modules take the package's layer without a line here: a feature source is one module, its
#: registry line and the schema's enum (docs/architecture.md, "Adding a feature source").
OPEN_PACKAGES = ["cbedtdc.features"]
PURE = ["cbedtdc.metrics", "cbedtdc.plots", "cbedtdc.plots_robustness", "cbedtdc.crystallography", "cbedtdc.calibration",
        "cbedtdc.cascade.plan", "cbedtdc.cascade.routing", "cbedtdc.cascade.routing.core", "cbedtdc.cascade.routing.rules"]
HEAVY = {"torch", "torchvision", "h5py", "xgboost"}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(LIB.rglob("*.py")):
        parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known, *, module_level_only: bool = False) -> set[str]:
    """Modules imported by one file: ``from a import b`` names ``a.b`` when that is a module, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from ..io import x
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return found


def graph(module_level_only: bool = False) -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, mods, module_level_only=module_level_only) for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` among the keys of ``edges``, or None.

    >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_inside_the_library():
    edges = {m: {t for t in targets if t.startswith("cbedtdc")} for m, targets in graph().items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_has_a_layer_and_imports_downwards_only():
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    # a module of an open package not named in LAYERS takes the package's layer (and its import rules)
    layer.update({m: layer[p] for m in modules() for p in OPEN_PACKAGES if m.startswith(p + ".") and m not in layer})
    unplaced = sorted(set(modules()) - set(layer))
    assert not unplaced, f"{unplaced}: give each a layer in LAYERS (tests/unit/test_architecture.py) and a row in " \
                         "docs/architecture.md"
    upward = [f"{m} (layer {layer[m]}) imports {t} (layer {layer[t]})" for m, targets in graph().items()
              for t in sorted(targets) if t in layer and layer[t] > layer[m]]
    assert not upward, "; ".join(upward)


@pytest.mark.parametrize("name", PURE)
def test_pure_rooms_import_no_torch_h5py_or_xgboost(name):
    mods = modules()
    direct = {t.split(".")[0] for t in imports(name, mods[name], mods)} & HEAVY
    assert not direct, f"{name} imports {sorted(direct)} (module or function level): it must stay pure numpy"
    # what `import name` loads: the module-level imports, followed through the library
    seen, todo, module_graph = set(), [name], graph(module_level_only=True)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        heavy = {t.split(".")[0] for t in module_graph.get(m, ())} & HEAVY
        assert not heavy, f"import {name} loads {m}, which imports {sorted(heavy)} at module level"
        todo += [t for t in module_graph.get(m, ()) if t in module_graph]


def test_the_library_never_imports_snakemake():
    users = sorted(m for m, targets in graph().items() if any(t.split(".")[0] == "snakemake" for t in targets))
    assert not users, f"{users} import snakemake: the library must run and be tested without it"


def test_the_walk_sees_lazy_and_relative_imports(tmp_path):
    """The guard itself: an import inside a function, a relative one and `from package import module` all count."""
    path = tmp_path / "m.py"
    path.write_text("import numpy as np\n\ndef f():\n    import torch\n    from ..io import atomic_path\n"
                    "    from cbedtdc import cascade\n")
    found = imports("cbedtdc.synth.m", path, {"cbedtdc.io", "cbedtdc.cascade"})
    assert found == {"numpy", "torch", "cbedtdc.io", "cbedtdc.cascade"}
    assert imports("cbedtdc.synth.m", path, set(), module_level_only=True) == {"numpy"}


def test_docs_architecture_table_lists_exactly_the_layers():
    """docs/architecture.md draws the same table as LAYERS: every room in the row of its layer, nothing else."""
    text = (LIB.parent / "docs" / "architecture.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and ln.split("|")[1].strip()[:1].isdigit()]
    assert len(rows) == len(LAYERS), rows
    for row, layer in zip(rows, LAYERS):
        named = {f"cbedtdc.{m}" for m in re.findall(r"`([a-z_.]+)`", row.split("|")[2])}
        want = set(layer) - {"cbedtdc"}
        assert named == want, f"{row.split('|')[1].strip()}: docs only {sorted(named - want)}, " \
                              f"LAYERS only {sorted(want - named)}"


def test_every_module_named_in_layers_exists():
    mods = modules()
    missing = [m for layer in LAYERS for m in layer if m not in mods]
    assert not missing, f"LAYERS names modules that do not exist: {missing}"


MAX_LINES = 550


def test_no_module_over_550_lines():
    """One concern per module: a file past MAX_LINES is split along its concerns (as ``data`` and ``train.engine``
    were), not excused with a comment."""
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}; split each along its concerns"
