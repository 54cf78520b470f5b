"""launch/segment.launch.py against the package. `launch_ros` cannot be installed here (no PyPI wheel), so the file is
read with ast: its executable is the console script, its files exist, every launch argument it declares is used
and every one it uses is declared, the parameters it overrides and the topics it remaps are the node's. It is run
only where launch_ros is importable. config/segment.yaml is checked against the node's parameter table too."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Dict, Set

import pytest
import yaml

from mmseg_ros import modalities
from mmseg_ros.ros import launch_args
from mmseg_ros.pipeline import config as node_config
from mmseg_ros.pipeline.config import NodeConfig

# ROS-facing: `make test` runs this module on every distro (pytest -m ros).
pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "segment.launch.py"
SOURCE = LAUNCH.read_text()
TREE = ast.parse(SOURCE)
ROS_PARAMETERS = ("use_sim_time",)  # declared by every rclpy node


class Resolver:
    """Possible string values of expressions in the launch file: literals, module constants (also os.path.join and
    attributes of imported mmseg_ros modules), and loop variables over module tables (dict keys / values, tuples)."""

    def __init__(self, tree: ast.Module):
        self.modules = {alias.asname or alias.name: importlib.import_module(f"{node.module}.{alias.name}")
                        for node in tree.body
                        if isinstance(node, ast.ImportFrom) and node.module.startswith("mmseg_ros")
                        for alias in node.names}
        self.constants: Dict[str, object] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    self.constants[node.targets[0].id] = self.value(node.value)
                except ValueError:
                    pass

    def value(self, node: ast.AST):
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in self.modules:
            return getattr(self.modules[node.value.id], node.attr)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join":
            return os.path.join(*(self.value(a) for a in node.args))
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self.value(e) for e in node.elts)
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise ValueError(ast.unparse(node)) from None

    def iterated(self, node: ast.AST):
        """Items a for loop / comprehension over `node` yields."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "items":
            return list(self.value(node.func.value).items())
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            return list(self.value(node.func.value).values())
        if isinstance(node, ast.Tuple):
            return [self.partial(e) for e in node.elts]
        return list(self.value(node))

    def partial(self, node: ast.AST):
        """Like value(), but a tuple keeps its resolvable elements and has None for the others."""
        if isinstance(node, ast.Tuple):
            return tuple(self.partial(e) for e in node.elts)
        try:
            return self.value(node)
        except ValueError:
            return None

    def names_in_calls(self, callees) -> Set[str]:
        """Every string the first argument of a call to one of `callees` can take."""
        found: Set[str] = set()

        def visit(node, env):
            if isinstance(node, (ast.For, ast.comprehension)):
                env = {**env, **self._bind(node.target, node.iter)}
            if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)):
                for gen in node.generators:
                    env = {**env, **self._bind(gen.target, gen.iter)}
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in callees and node.args:
                first = node.args[0]
                if isinstance(first, ast.Name) and first.id in env:
                    found.update(env[first.id])
                else:
                    try:
                        found.add(self.value(first))
                    except ValueError:
                        pass  # e.g. the parameter of the `arg` helper itself
            for child in ast.iter_child_nodes(node):
                visit(child, env)

        visit(TREE, {})
        return found

    def _bind(self, target, iterable) -> Dict[str, Set[str]]:
        try:
            items = self.iterated(iterable)
        except (ValueError, TypeError):
            return {}
        if isinstance(target, ast.Name):
            return {target.id: {i for i in items if isinstance(i, str)}}
        if isinstance(target, ast.Tuple):
            return {elt.id: {item[i] for item in items if isinstance(item[i], str)}
                    for i, elt in enumerate(target.elts) if isinstance(elt, ast.Name)}
        return {}


RESOLVER = Resolver(TREE)
C = RESOLVER.constants


def _console_scripts() -> Dict[str, str]:
    setup = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(setup):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = [e.value for e in value.elts]
                    return {e.split("=")[0].strip(): e.split("=")[1].strip() for e in entries}
    raise AssertionError("setup.py has no console_scripts")


def test_executable_is_the_node_console_script():
    scripts = _console_scripts()
    assert C["EXECUTABLE"] in scripts
    assert scripts[C["EXECUTABLE"]] == "mmseg_ros.ros.node:main"
    assert C["PACKAGE"] == "mmseg_ros" == (ROOT / "resource").joinpath("mmseg_ros").name
    assert node_config.NODE_NAME in SOURCE or "node_config.NODE_NAME" in SOURCE


def test_files_it_names_exist_and_are_installed():
    for key in ("PARAMS_FILE", "DDS_PROFILE"):
        path = ROOT / C[key]
        assert path.is_file(), path
        assert Path(C[key]).parts[0] == "config"  # setup.py installs the config/ tree into share/mmseg_ros
    assert 'tree("config")' in (ROOT / "setup.py").read_text() and 'tree("launch")' in (ROOT / "setup.py").read_text()


def test_every_launch_argument_is_declared_and_used():
    declared = RESOLVER.names_in_calls({"DeclareLaunchArgument"})
    asked = []  # the arguments launch_args reads on the launch file's behalf

    def recorder(name):
        asked.append(name)
        return ""

    launch_args.remappings(recorder)
    launch_args.parameter_overrides(recorder)
    used = RESOLVER.names_in_calls({"arg", "LaunchConfiguration"}) | set(asked)
    assert {"params_file", "namespace", "model", "checkpoint", "device"} <= declared
    assert set(C["TOPIC_ARGUMENTS"]) <= declared
    assert declared == used, f"declared only: {declared - used}; used only: {used - declared}"


def test_overridden_parameters_and_remapped_topics_are_the_nodes():
    params = set(C["PARAMETER_ARGUMENTS"].values())
    assert params <= set(node_config.PARAMETER_NAMES) | set(ROS_PARAMETERS), params
    assert set(launch_args.BOOLEAN_PARAMETERS) <= params
    for name in launch_args.BOOLEAN_PARAMETERS:
        assert name in ROS_PARAMETERS or node_config.parameter(name).type == node_config.BOOL
    remapped = {modalities.get(m).name for m in C["TOPIC_ARGUMENTS"].values()}
    assert len(remapped) == len(C["TOPIC_ARGUMENTS"])
    # The node subscribes to these relative names (registry topics), which the remaps must name as sources.
    rules = Path(launch_args.__file__).read_text()
    assert "node_config.input_topics" in rules and "node_config.camera_info_topic" in rules
    # Output remaps name the node's private topics (segment.SegmentNodeCore publishes "~/<output>").
    segment = (ROOT / "mmseg_ros" / "ros" / "segment.py").read_text()
    for source in C["OUTPUT_ARGUMENTS"].values():
        assert source.startswith("~/") and f'"{source}"' in segment, source


def test_camera_info_follows_the_camera_topic_unless_remapped():
    args = {"rgb_topic": "/sensing/camera/front/image_raw", "labels_topic": "/perception/labels"}
    remaps = dict(launch_args.remappings(lambda name: args.get(name, "")))
    assert remaps["rgb/image"] == "/sensing/camera/front/image_raw"
    assert remaps["rgb/camera_info"] == "/sensing/camera/front/camera_info"
    assert remaps["~/labels"] == "/perception/labels"
    args["camera_info_topic"] = "/calib/front"
    assert dict(launch_args.remappings(lambda name: args.get(name, "")))["rgb/camera_info"] == "/calib/front"
    assert launch_args.remappings(lambda name: "") == []
    assert launch_args.parameter_overrides({"use_sim_time": "True", "model": "x"}.get) == \
        {"use_sim_time": True, "model.card": "x"}


def test_params_file_declares_only_node_parameters_and_validates():
    data = yaml.safe_load((ROOT / C["PARAMS_FILE"]).read_text())
    assert list(data) == ["/**"]  # matches the node under any namespace and name (launch files, remapped names)
    values = node_config.flatten(data["/**"]["ros__parameters"])
    unknown = set(values) - set(node_config.PARAMETER_NAMES) - set(ROS_PARAMETERS)
    assert not unknown, f"config/segment.yaml sets undeclared parameters {sorted(unknown)}"
    undocumented = set(node_config.PARAMETER_NAMES) - set(values)
    assert not undocumented, f"config/segment.yaml does not show {sorted(undocumented)}"
    for name, value in values.items():
        default = node_config.parameter(name).default
        assert value == (default if default is not None else []), f"{name}: file {value!r}, node {default!r}"
    NodeConfig.from_values(values)  # the shipped defaults pass the node's validation


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installable from PyPI; checked statically above")
def test_generate_launch_description_runs():
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    from launch.actions import DeclareLaunchArgument

    try:
        get_package_share_directory(C["PACKAGE"])
    except PackageNotFoundError:
        pytest.skip("mmseg_ros is not installed in an ament prefix (colcon build) here")
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert declared == RESOLVER.names_in_calls({"DeclareLaunchArgument"})
