"""scripts/gpu_check.py (`make gpu-check`) without a GPU: its dry run runs every step tiny on the CPU and writes the
tables; the real run's plan covers the CUDA tests and the model, engine and node benchmarks at every precision."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from mmseg_ros import precision

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plan_runs_every_benchmark_at_every_precision_on_cuda():
    gpu_check = load()
    assert set(gpu_check.PRECISIONS) == set(precision.NAMES) and gpu_check.PRECISIONS[0] == precision.FP32
    plan = {name: argv for name, argv, *_ in gpu_check.steps(dry=False)}
    assert list(plan)[0] == "cuda_tests" and "cuda" in plan["cuda_tests"]
    for p in precision.NAMES:
        for bench in ("model", "engine", "node"):
            argv = plan[f"{bench}_{p}"]
            assert argv[:3] == ["mmseg_ros.cli", "bench", bench] and argv[argv.index("--precision") + 1] == p
            assert argv[argv.index("--device") + 1] == "cuda"
    fp32 = [n for n in plan if n.endswith("fp32")]
    assert list(plan).index(fp32[-1]) < min(list(plan).index(n) for n in plan if n.endswith(("bf16", "fp16")))


def test_missing_modules_are_named():
    gpu_check = load()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert gpu_check.missing({"json": "json", "no_such_module_mmseg": "no-such"}, env) == {
        "no_such_module_mmseg": "no-such"}


def test_dry_run_writes_the_tables(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--wheels",
                           str(tmp_path / "no-wheels")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads((out / "status.json").read_text())
    assert set(status) == {"cuda_tests", "model_fp32", "engine_fp32", "node_fp32"}
    assert all(s["status"] == "ok" for s in status.values()), status
    tables = (out / "gpu_tables.md").read_text()
    assert "dry run" in tables and tables.count("| card |") == 2 and "| size | inputs |" in tables
    assert "passed" in tables  # the test step's summary line
