#!/usr/bin/env python3
"""`make gpu-check`: the CUDA tests and the model, engine and node benchmarks at fp32 / bf16 / fp16 on a lent GPU, in
one run of at most ~8 minutes, writing the GPU tables to $OUT (or out/gpu).

The GPU machine has torch (with CUDA) on its own Python and no network. What the project needs beyond torch is
installed there without building anything and without touching that Python: each missing module is installed with
`pip --no-deps --target` into a private folder, from a folder of wheels carried with the work tree (`--wheels`,
default .gpu-wheels/, made on a machine with network by `--fetch-wheels`), else from the package index when one
answers. sam2 is installed as its maintainers build it without CUDA extensions (SAM2_BUILD_CUDA=0, --no-deps,
--no-build-isolation). A step whose modules are still missing (e.g. rclpy for the node benchmark) is reported as not
measured with the reason, and the other steps run.

    python3 scripts/gpu_check.py                      # on the GPU machine (make gpu-check)
    python3 scripts/gpu_check.py --fetch-wheels .gpu-wheels   # here, before carrying the tree there
    python3 scripts/gpu_check.py --dry-run            # on any CPU: every step, tiny and on the CPU, to test the wiring

Every step has its own time limit and the whole run a budget (--budget, default 420 s of steps after the install);
steps that would start past it are listed as skipped. Output: gpu_tables.md (the summary: environment, then each
step's table or reason), <step>.log per step, and status.json (per step: ok / failed / skipped / missing, seconds).
Only the Python standard library is used here, so the script runs before anything is installed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16", "fp16")  # the names of mmseg_ros/precision.py, which may not be importable yet
SAM2_VERSION = "1.1.0"  # as the Makefile pins it
# import name -> pip requirement, for what the GPU machine's Python may lack (torch and numpy are expected there).
MODULES = {
    "yaml": "pyyaml",
    "cv2": "opencv-python-headless",
    "numba": "numba",
    "llvmlite": "llvmlite",  # numba's compiler, installed --no-deps like the rest
    "hydra": "hydra-core",
    "omegaconf": "omegaconf>=2.2,<2.4",  # what hydra-core 1.3 accepts
    "antlr4": "antlr4-python3-runtime==4.9.3",  # the version omegaconf 2.x requires
    "iopath": "iopath",
    "portalocker": "portalocker",
    "tqdm": "tqdm",
    "PIL": "pillow",
}
TEST_MODULES = {  # for the CUDA tests only
    "pytest": "pytest",
    "pluggy": "pluggy",
    "iniconfig": "iniconfig",
    "packaging": "packaging",
    "hypothesis": "hypothesis",
    "sortedcontainers": "sortedcontainers",
    "attr": "attrs",
}
SAM2 = ("sam2", f"sam2=={SAM2_VERSION}")
EXPECTED = ("torch", "numpy", "torchvision")  # built for the machine's CUDA: checked and reported, never installed
CARRY_LIMIT_MIB = 64  # what travels to the GPU machine beside the work tree
# The node benchmark runs two processes over DDS: the ROS 2 wheels the Makefile installs, with their dependencies.
ROS_MODULES = {"rclpy": "ros-rclpy", "sensor_msgs": "ros-sensor-msgs", "diagnostic_msgs": "ros-diagnostic-msgs",
               "rmw_fastrtps_cpp": "ros-rmw-fastrtps-cpp", "lifecycle_msgs": "ros-lifecycle-msgs"}
CUDA_TESTS = ["test/test_engine.py", "test/test_pipeline.py", "test/test_faults.py"]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="where the tables go (default: $OUT, else out/gpu)")
    p.add_argument("--wheels", default=str(ROOT / ".gpu-wheels"), help="folder of carried wheels")
    p.add_argument("--site", default=None, help="private install folder (default: <out>/site)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for all steps after the install")
    p.add_argument("--dry-run", action="store_true", help="every step tiny and on the CPU (tests the wiring)")
    p.add_argument("--fetch-wheels", metavar="DIR", default=None,
                   help="download the wheels the GPU machine lacks into DIR (for CPython 3.12, x86_64) and stop")
    p.add_argument("--python-version", default="3.12", help="with --fetch-wheels: the GPU machine's Python")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Installing what is missing.


def missing(modules, env) -> dict:
    """The modules of `modules` (import name -> requirement) that the Python given by env cannot import."""
    code = ("import importlib.util, json, sys; "
            "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))")
    result = subprocess.run([sys.executable, "-c", code, *modules], env=env, capture_output=True, text=True,
                            timeout=120)
    absent = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else list(modules)
    return {m: modules[m] for m in absent}


def pip_install(requirements, site: Path, wheels: Path, env, log, extra=()) -> bool:
    """pip install --no-deps --target site: from the carried wheels only when the folder exists (no network on
    the GPU machine: an index lookup would only time out), else from the configured index."""
    if not requirements:
        return True
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
               "--disable-pip-version-check", *extra]
    if wheels.is_dir():
        command += ["--no-index", "--find-links", str(wheels)]
    else:
        command += ["--timeout", "15", "--retries", "1"]
    log.write(f"$ {' '.join(command)} {' '.join(requirements)}\n")
    log.flush()
    done = subprocess.run(command + list(requirements), env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    return done.returncode == 0


def install(site: Path, wheels: Path, env, log, want_ros: bool) -> dict:
    """Install each missing module on its own (one absent wheel must not stop the others); returns what is still
    missing: import name -> requirement."""
    wanted = {**MODULES, SAM2[0]: SAM2[1], **TEST_MODULES, **(ROS_MODULES if want_ros else {})}
    needed = missing(wanted, env)
    log.write(f"missing before the install: {sorted(needed) or 'nothing'}\n")
    for module, requirement in needed.items():
        if module == SAM2[0]:
            sam2_env = {**env, "SAM2_BUILD_CUDA": "0"}
            pip_install([requirement], site, wheels, sam2_env, log, extra=("--no-build-isolation",))
        elif module in ROS_MODULES:
            continue  # below, all at once: they depend on each other
        else:
            pip_install([requirement], site, wheels, env, log)
    ros = {m: r for m, r in needed.items() if m in ROS_MODULES}
    if ros and wheels.is_dir():  # the ROS wheels and their ros-* dependencies, as carried
        carried = sorted(str(w) for w in wheels.glob("ros_*.whl"))
        pip_install(carried, site, wheels, env, log)
    still = missing(wanted, env)
    log.write(f"missing after the install: {sorted(still) or 'nothing'}\n")
    return still


def fetch_wheels(folder: Path, python_version: str) -> int:
    """Download (here, with network) the wheels the GPU machine's Python lacks; sam2 is built into a wheel without
    CUDA extensions. Prints the total size: everything carried to the device travels in at most 64 MiB."""
    folder.mkdir(parents=True, exist_ok=True)
    platform = ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                "--python-version", python_version, "--only-binary=:all:", "--implementation", "cp"]
    failed = []
    for requirement in {**MODULES, **TEST_MODULES}.values():
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(folder),
                               *platform, requirement])
        if done.returncode:  # pure-Python sources (antlr4 ships none as a wheel): build a wheel, it is portable
            done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(folder),
                                   requirement])
        if done.returncode:
            failed.append(requirement)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "-w", str(folder), SAM2[1]], env={**os.environ, "SAM2_BUILD_CUDA": "0"})
    if done.returncode:
        failed.append(SAM2[1])
    wheels = sorted(folder.glob("*.whl"), key=lambda f: -f.stat().st_size)
    size = sum(f.stat().st_size for f in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {folder}"
          + (f"; not fetched: {', '.join(failed)}" if failed else ""))
    if size > CARRY_LIMIT_MIB * 2**20:
        print(f"more than the {CARRY_LIMIT_MIB} MiB that can be carried: leave out what the GPU machine has (largest: "
              + ", ".join(f"{w.name} {w.stat().st_size / 2**20:.1f} MiB" for w in wheels[:3]) + ")")
    print("The ROS 2 wheels (rclpy and its ros-* dependencies) are not fetched: for Python 3.12 they exceed what can "
          "be carried; without them the node benchmark is reported as not measured.")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------------------------
# Steps.


def steps(dry: bool):
    """(name, argv after `python -m`, time limit s, modules it needs, title) in the order they run: the tests, then
    per precision the model, engine and node benchmarks, so a run cut short by its budget has fp32 whole."""
    cli = ["mmseg_ros.cli", "bench"]
    if dry:  # the same commands, tiny, on the CPU (half precisions are CUDA-only, so fp32 alone)
        precisions, device = PRECISIONS[:1], "cpu"
        model = ["--sizes", "64", "--repeat", "1", "--warmup", "0", "--cards", "test_tiny_mle_sam", "--no-loop",
                 "--no-bare"]
        engine = ["--camera-size", "96", "--repeat", "2", "--warmup", "1", "--cards", "test_tiny_mle_sam"]
        node = ["--sizes", "128", "160x96", "--sets", "3", "--rate", "8", "--card", "test_tiny_mle_sam"]
        tests = ["-k", "cuda or upsample_argmax"]
    else:
        precisions, device = PRECISIONS, "cuda"
        model = ["--sizes", "512", "1024", "--repeat", "5", "--warmup", "1", "--cards", "mle_sam_hiera_t",
                 "memory_sam_hiera_t", "mle_sam_hiera_b+_deliver"]
        engine = ["--camera-size", "1024", "--repeat", "20", "--warmup", "3", "--cards", "default", "mle_sam_hiera_t",
                  "memory_sam_hiera_t"]
        node = ["--sizes", "1024", "1920x1200", "--sets", "12"]
        tests = ["-k", "cuda"]
    core = (*MODULES, SAM2[0])
    out = [("cuda_tests", ["pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS, *tests], 150,
            (*core, *TEST_MODULES), "CUDA tests (CPU/GPU agreement per precision)")]
    for p in precisions:
        out.append((f"model_{p}", [*cli, "model", "--device", device, "--precision", p, *model], 120, core,
                    f"Model forward, {p}"))
        out.append((f"engine_{p}", [*cli, "engine", "--device", device, "--precision", p, *engine], 60, core,
                    f"Engine (Segmenter.segment), {p}"))
        out.append((f"node_{p}", [*cli, "node", "--device", device, "--precision", p, *node], 120,
                    (*core, *ROS_MODULES), f"Node overhead vs DDS transport, forward on the GPU, {p}"))
    return out


def run_step(name, argv, limit, env, out: Path) -> tuple:
    """Run one step with its own time limit; (status, seconds, the table lines it printed)."""
    log_path = out / f"{name}.log"
    begin = time.monotonic()
    with open(log_path, "w") as log:
        try:
            done = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=log, text=True, timeout=limit)
            status, stdout = ("ok" if done.returncode == 0 else f"failed (exit {done.returncode})"), done.stdout
        except subprocess.TimeoutExpired as exc:
            status = f"failed (over its {limit} s limit)"
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        log.write("\n--- stdout ---\n" + stdout)
    return status, time.monotonic() - begin, stdout


def environment(env) -> str:
    code = ("import torch, platform; c = torch.cuda.is_available(); "
            "print(f'python {platform.python_version()}, torch {torch.__version__}, CUDA '"
            "+ (f'{torch.version.cuda}, {torch.cuda.get_device_name(0)}' if c else 'not available'))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = [done.stdout.strip() or f"torch not importable: {done.stderr.strip().splitlines()[-1:]}"]
    absent = missing({m: m for m in EXPECTED}, env)
    if absent:
        lines.append(f"not installed on this machine (expected with its torch): {', '.join(sorted(absent))}")
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
        lines.append(f"nvidia-smi: {smi.stdout.strip()}")
    load = os.getloadavg()
    lines.append(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, {os.cpu_count()} CPUs")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    if args.fetch_wheels:
        return fetch_wheels(Path(args.fetch_wheels), args.python_version)
    out = Path(args.out or os.environ.get("OUT") or ROOT / "out" / "gpu")
    out.mkdir(parents=True, exist_ok=True)
    site = Path(args.site) if args.site else out / "site"
    site.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(site), env.get("PYTHONPATH")) if p)
    env["OMP_WAIT_POLICY"] = env.get("OMP_WAIT_POLICY", "PASSIVE")
    env["ROS_DOMAIN_ID"] = env.get("ROS_DOMAIN_ID", "97")  # a private domain: nothing else on the machine is disturbed
    started = time.monotonic()
    with open(out / "install.log", "w") as log:
        still = install(site, Path(args.wheels), env, log, want_ros=True)
    installed_s = time.monotonic() - started
    report = [f"# GPU check{' (dry run on the CPU: wiring only, not GPU numbers)' if args.dry_run else ''}", "",
              environment(env), "",
              f"Install: {installed_s:.0f} s; still missing: {', '.join(sorted(still)) or 'nothing'}", ""]
    status = {}
    deadline = time.monotonic() + args.budget
    for name, argv_, limit, needs, title in steps(args.dry_run):
        lacking = sorted(m for m in needs if m in still)
        if lacking:
            status[name] = {"status": f"missing {', '.join(lacking)}", "seconds": 0.0}
            report += [f"## {title}", "", f"not measured: {', '.join(lacking)} not installable here", ""]
            continue
        left = deadline - time.monotonic()
        if left < min(limit, 30):
            status[name] = {"status": "skipped (budget spent)", "seconds": 0.0}
            report += [f"## {title}", "", "not measured: the run's time budget was spent", ""]
            continue
        result, seconds, stdout = run_step(name, argv_, min(limit, left), env, out)
        status[name] = {"status": result, "seconds": round(seconds, 1)}
        print(f"{name}: {result} in {seconds:.0f} s", flush=True)
        body = stdout.strip() or "(no output)"
        if name == "cuda_tests":
            body = "\n".join(stdout.strip().splitlines()[-3:])
        report += [f"## {title}", "", f"`python -m {' '.join(argv_)}`: {result}, {seconds:.0f} s", "", body, ""]
    report.append(f"Total {time.monotonic() - started:.0f} s.")
    (out / "gpu_tables.md").write_text("\n".join(report) + "\n")
    (out / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    print(f"wrote {out / 'gpu_tables.md'}")
    return 0 if all(s["status"] == "ok" or s["status"].startswith("missing") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
