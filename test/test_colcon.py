"""The README's colcon route: a real `colcon build` (colcon-core + colcon-ros, the ament_python build of a ROS 2
workspace) of this repository in a temporary workspace, then what a user gets after `source install/setup.sh`:
the node executable where `ros2 run` / launch_ros look for it, the shared files the ament index points at, code
imported from the install rather than from the checkout, and no test-only model cards. Before that, the manifest:
every package the code imports is an exec_depend of package.xml (what `rosdep install` installs) or one of the
pip-only packages the README's colcon recipe installs."""
from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "mmseg_ros"
TEST_ONLY = "test_tiny_*"  # setup.py's pattern for cards that exist only for this suite
# A fresh clone has none of these; the checkout may (venvs, builds, caches), and colcon must not crawl them.
NOT_IN_A_CLONE = (".git", ".venv*", "build", "install", "log", "out", "runs", "data", "eval", "*.egg-info",
                  "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache")


# Imported module -> the rosdep key that installs it (rosdistro's rosdep/python.yaml for Python libraries; a ROS
# package's key is its name). tf2_ros the Python module ships in the package tf2_ros_py.
ROSDEP_KEYS = {"numpy": "python3-numpy", "numba": "python3-numba", "cv2": "python3-opencv", "yaml": "python3-yaml",
               "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "PIL": "python3-pil",
               "rosbags": "python3-rosbags-pip", "tf2_ros": "tf2_ros_py"}
ROS_PACKAGES = ("rclpy", "launch", "launch_ros", "ament_index_python", "tf2_ros")
IMPLIED = {"rclpy.lifecycle": "lifecycle_msgs"}  # imported through rclpy, a package of its own
# No rosdep key fits: the README's colcon recipe installs them with pip.
PIP_ONLY = {"torch": "torch==2.13.0", "sam2": "sam2==1.1.0"}


def _imports():
    """(module, file) for every absolute import under mmseg_ros/ and launch/, those inside functions included."""
    for folder in ("mmseg_ros", "launch"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    yield from ((alias.name, path) for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    yield node.module, path


def test_every_imported_package_is_a_dependency_or_a_documented_pip_install():
    depends = {e.text.strip() for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}
    readme = (ROOT / "README.md").read_text()
    missing, seen = [], set()
    for module, path in _imports():
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == PACKAGE:
            continue
        seen.add(top)
        if top in PIP_ONLY:
            if not re.search(rf"pip install [^\n]*{re.escape(PIP_ONLY[top])}", readme):
                missing.append(f"{top} ({path.relative_to(ROOT)}): README has no `pip install ... {PIP_ONLY[top]}`")
            continue
        keys = [ROSDEP_KEYS.get(top, top)] + [key for prefix, key in IMPLIED.items() if module.startswith(prefix)]
        if top not in ROSDEP_KEYS and not (top in ROS_PACKAGES or top.endswith(("_msgs", "_interfaces"))):
            missing.append(f"{top} ({path.relative_to(ROOT)}): no rosdep key known here; add one to package.xml "
                           "and ROSDEP_KEYS, or a pip line to the README and PIP_ONLY")
        missing += [f"{top} ({path.relative_to(ROOT)}): <exec_depend>{key}</exec_depend>" for key in keys
                    if key not in depends]
    assert {"rclpy", "numpy", "torch", "yaml"} <= seen  # the scan sees imports at all
    assert not missing, "package.xml / README lack:\n" + "\n".join(sorted(set(missing)))


def _colcon():
    """The colcon installed beside this Python (the venv's), else one on PATH."""
    beside = Path(sys.executable).parent / "colcon"
    return str(beside) if beside.exists() else shutil.which("colcon")


def _copy_checkout(target: Path) -> None:
    """The repository as a clone would have it: the files git knows (tracked, or new and not ignored), symlinks kept;
    without git, the tree minus what a clone never has."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True) if shutil.which("git") and (ROOT / ".git").exists() else None
    if listed is not None and listed.returncode == 0:
        for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
            source = ROOT / name
            if not os.path.lexists(source):  # deleted in the working tree, not yet committed
                continue
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
        return

    def skip(folder, names):
        return [n for n in names if any(fnmatch(n, pattern) for pattern in NOT_IN_A_CLONE)
                and (Path(folder) == ROOT or n in ("__pycache__",))]

    shutil.copytree(ROOT, target, symlinks=True, ignore=skip)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    colcon = _colcon()
    if colcon is None:
        pytest.skip("colcon is not installed (`pip install colcon-core colcon-ros`; `make venv` does)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    _copy_checkout(ws / "src" / PACKAGE)
    env = dict(os.environ, COLCON_HOME=str(ws / ".colcon"))  # no user defaults.yaml changes the build
    for name in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH", "PYTHONPATH"):  # nothing from another workspace
        env.pop(name, None)
    build = subprocess.run([colcon, "--log-base", "log", "build", "--base-paths", "src", "--build-base", "build",
                            "--install-base", "install", "--event-handlers", "console_direct-"],
                           cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"colcon build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    assert f"Finished <<< {PACKAGE}" in build.stdout + build.stderr, "colcon did not build the package:\n" + (
        build.stdout[-2000:] + build.stderr[-2000:])
    return ws


def _in_sourced_install(ws: Path, command: str) -> subprocess.CompletedProcess:
    """Run `command` in a POSIX shell after `. install/setup.sh`, as a user's terminal would be, away from the
    checkout (so a relative import path cannot reach it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH", "PYTHONPATH")}
    return subprocess.run(["sh", "-c", f". {ws / 'install' / 'setup.sh'} && {command}"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_node_executable_is_where_ros2_run_looks(workspace):
    node = workspace / "install" / PACKAGE / "lib" / PACKAGE / "segment_node"
    assert node.is_file() and os.access(node, os.X_OK), f"{node} missing or not executable"
    shown = _in_sourced_install(workspace, f"{shlex.quote(str(node))} --help")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "usage: segment_node" in shown.stdout and "--lifecycle" in shown.stdout, shown.stdout


def test_share_holds_the_manifest_launch_config_and_shipped_models_but_no_test_cards(workspace):
    share = workspace / "install" / PACKAGE / "share" / PACKAGE
    for name in ("package.xml", "launch/segment.launch.py", "config/segment.yaml", "config/fastdds_shm.xml",
                 "models/default.yaml"):
        assert (share / name).is_file(), f"{name} not installed in {share}"
    assert (share / "package.xml").read_bytes() == (ROOT / "package.xml").read_bytes()
    marker = workspace / "install" / PACKAGE / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    assert marker.is_file(), "ament index marker missing: ros2 run / get_package_share_directory cannot find us"

    source_models = {p.relative_to(ROOT / "models") for p in (ROOT / "models").rglob("*") if p.is_file()}
    shipped = {p for p in source_models if not fnmatch(p.name, TEST_ONLY)}
    installed = {p.relative_to(share / "models") for p in (share / "models").rglob("*") if p.is_file()}
    assert any(p.suffix == ".pt" for p in shipped) and shipped != source_models  # the checks below check something
    assert installed == shipped, f"missing: {sorted(map(str, shipped - installed))}, " \
                                 f"not for users: {sorted(map(str, installed - shipped))}"
    test_cards = [str(p) for p in (workspace / "install").rglob(TEST_ONLY)]
    assert not test_cards, f"test-only cards installed: {test_cards}"


def test_the_install_not_the_checkout_is_what_runs(workspace):
    install = workspace / "install" / PACKAGE
    code = ("import mmseg_ros, mmseg_ros.ros.node\n"
            "from mmseg_ros import cards, resources\n"
            "print(mmseg_ros.__file__); print(mmseg_ros.ros.node.__file__); print(resources.share_dir())\n"
            "print(cards.load('default').checkpoint)")
    ran = _in_sourced_install(workspace, f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    package, node, share, checkpoint = ran.stdout.splitlines()[-4:]
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert Path(package) == site / PACKAGE / "__init__.py"
    assert Path(node) == site / PACKAGE / "ros" / "node.py"
    assert Path(share) == install / "share" / PACKAGE  # found through the ament prefix that setup.sh exported
    assert Path(checkpoint).is_file() and Path(checkpoint).is_relative_to(install / "share" / PACKAGE / "models")
