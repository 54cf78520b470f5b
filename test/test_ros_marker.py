"""`make test` runs only the tests marked `ros` on the second ROS 2 distro, so an unmarked ROS test would silently be
tested on one distro. Read from the test sources: a test function that imports rclpy or a message package must be
marked (itself or by its module's `pytestmark`), and a module that imports them anywhere (helpers, fixtures) must
mark something."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _ros_imports(tree: ast.AST):
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for name in names:
            top = name.split(".")[0]
            if top == "rclpy" or top.endswith(("_msgs", "_interfaces")) or name.startswith("mmseg_ros.ros"):
                yield name


def _is_ros_mark(expr: ast.expr) -> bool:
    """`pytest.mark.ros`, called or not, alone or in a list."""
    if isinstance(expr, (ast.List, ast.Tuple)):
        return any(_is_ros_mark(e) for e in expr.elts)
    if isinstance(expr, ast.Call):
        expr = expr.func
    return isinstance(expr, ast.Attribute) and expr.attr == "ros" and ast.unparse(expr.value) == "pytest.mark"


def _audit(source: str):
    """(the module's ROS imports, whether anything is marked, unmarked test functions that import ROS)"""
    tree = ast.parse(source)
    module_marked = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                        and _is_ros_mark(n.value) for n in tree.body)
    tests = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    marked = {t.name for t in tests if any(_is_ros_mark(d) for d in t.decorator_list)}
    unmarked = [] if module_marked else [t.name for t in tests if t.name not in marked and any(_ros_imports(t))]
    return sorted(set(_ros_imports(tree))), module_marked or bool(marked), unmarked


@pytest.mark.parametrize("path", sorted(HERE.glob("test_*.py")), ids=lambda p: p.name)
def test_ros_facing_tests_are_marked(path):
    imports, anything_marked, unmarked = _audit(path.read_text())
    assert not unmarked, f"{path.name}: mark these @pytest.mark.ros: {unmarked}"
    assert anything_marked or not imports, f"{path.name} imports {imports} but marks no test `ros`"


def test_the_audit_catches_what_it_should():
    lone = "import pytest\n\ndef test_a():\n    import rclpy\n"
    assert _audit(lone) == (["rclpy"], False, ["test_a"])
    marked = "import pytest\n\n@pytest.mark.ros\ndef test_a():\n    from sensor_msgs.msg import Image\n"
    assert _audit(marked) == (["sensor_msgs.msg"], True, [])
    by_module = "import pytest\nimport rclpy\npytestmark = pytest.mark.ros\n\ndef test_a():\n    import rclpy\n"
    assert _audit(by_module) == (["rclpy"], True, [])
    helper_only = "import pytest\n\ndef helper():\n    import rclpy\n\ndef test_a():\n    helper()\n"
    assert _audit(helper_only) == (["rclpy"], False, [])  # -> the module-level assertion fails it
