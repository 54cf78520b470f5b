"""`mmseg bench soak`: segment_node for minutes against `mmseg sensors` at twice the nominal rate, with random
drop-outs of every sensor; prints a table of memory, latency and drop figures.

Three processes over real DDS: the node (`python -m mmseg_ros.ros.node`), the synthetic sensors (`python -m
mmseg_ros.ros.sensors --rate-scale R --drop ...`, a drop schedule drawn from `--seed`) and this one, which listens to
the node's labels (stamp-to-receive latency of every output, on the system clock that stamps and arrivals share) and
/diagnostics, and samples the node's VmRSS from /proc every second. Time 0 is the sensors' first scheduled stamp; the
first `--warmup` seconds are excluded (model warm-up, DDS discovery, allocator growth); "first" and "last" are the
first and last `--window` seconds after it.

    mmseg bench soak --minutes 10                       # the long soak (default card, 128 px, 2x rate)
    mmseg bench soak --minutes 1 --card test_tiny_mle_sam --size 64 --warmup 15 --window 15   # test/test_soak.py

Checks (`SoakResult.failures`, also printed): the node ran to the end and exited 0 without a traceback; VmRSS grew
less than `--max-rss-growth-mb` after warm-up (the largest sample after warm-up minus the median of the last 5 s of
warm-up); the latency p95 of the last window is at most `--p95-factor` x the first + P95_SLACK_MS (own measurement
and the node's latency_p95_ms); outputs never stopped for longer than `--max-gap` s; every set the synchronizer emitted
is accounted for (published, superseded or below min) and every sensor was reported missing during its drop-outs.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import ConfigError

NAMESPACE = "/mmseg_soak"
NODE_NAME = "segment_node"
SENSORS = ("rgb", "depth", "event", "lidar")
START_TIMEOUT_S = 180.0  # node start-up (torch, SAM2, model build, warm-up forward) on a busy machine
RSS_SAMPLE_S = 1.0
DIAGNOSTICS_PERIOD_S = 0.5
BASELINE_S = 5.0  # RSS baseline: median of the samples in the last seconds of warm-up
# Added to the allowed last-window p95: one stall of the node by other processes on a shared CPU moves a p95 of a few
# tens of ms by this much without anything drifting; a queue building up grows it by seconds.
P95_SLACK_MS = 50.0
NS = 1_000_000_000


def configure(parser):
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the sensor stream (default 10)")
    parser.add_argument("--rate-scale", type=float, default=2.0, help="sensor rate x nominal (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drop schedule and the scene (default 0)")
    parser.add_argument("--card", default=None, help="model card (default: the node's default)")
    parser.add_argument("--size", type=int, default=128, help="sensor image size in px (default 128)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds excluded at the start (default 60)")
    parser.add_argument("--window", type=float, default=60.0, help="first/last window length in s (default 60)")
    parser.add_argument("--drops-per-minute", type=float, default=2.0, help="drop-outs per sensor per minute")
    parser.add_argument("--drop-seconds", type=float, nargs=2, default=(1.5, 6.0), metavar=("MIN", "MAX"),
                        help="drop-out length range in s (default 1.5 6)")
    parser.add_argument("--cpu-threads", type=int, default=1, help="the node's torch threads (default 1)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--p95-factor", type=float, default=2.0)
    parser.add_argument("--max-gap", type=float, default=5.0, help="longest allowed time without an output (s)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")


# ---------------------------------------------------------------------------------------------------------------------
# Drop schedule (pure).


def drop_schedule(seed: int, duration_s: float, per_minute: float, length_s: Tuple[float, float],
                  start_s: float = 0.0, sensors=SENSORS) -> List[Tuple[str, float, float]]:
    """Random drop-out windows (sensor, start, end) in [start_s, duration_s): for every sensor a Poisson number
    (mean per_minute per minute, at least one) of non-overlapping windows of uniform length in `length_s`, never
    all sensors at once (then no output can come, which would read as a stall)."""
    import numpy as np

    low, high = length_s
    if not 0 < low <= high:
        raise ConfigError(f"drop lengths must satisfy 0 < MIN <= MAX, got {length_s}")
    span = duration_s - start_s - high
    if span <= 0:
        raise ConfigError(f"a {duration_s:g} s stream has no room for {high:g} s drop-outs after {start_s:g} s")
    rng = np.random.default_rng(seed)
    windows = []
    for sensor in sensors:
        count = max(1, int(rng.poisson(per_minute * (duration_s - start_s) / 60.0)))
        taken: List[Tuple[float, float]] = []
        for _ in range(count * 10):  # rejection sampling of non-overlapping windows; gives up quietly when full
            if len(taken) == count:
                break
            a = start_s + float(rng.uniform(0.0, span))
            b = a + float(rng.uniform(low, high))
            a, b = round(a, 2), round(b, 2)
            if (all(b + 1.0 < s or a > e + 1.0 for s, e in taken)  # a second of service between drop-outs
                    and not _all_down(a - 1.0, b + 1.0, windows, [x for x in sensors if x != sensor])):
                taken.append((a, b))
        windows += [(sensor, a, b) for a, b in sorted(taken)]
    return windows


def _all_down(start: float, end: float, windows, others) -> bool:
    """Whether every sensor in `others` has a drop-out covering one common instant of [start, end]."""
    if not others:
        return True
    spans = [(max(start, a), min(end, b)) for s, a, b in windows if s == others[0] and a < end and b > start]
    return any(_all_down(a, b, windows, others[1:]) for a, b in spans)


# ---------------------------------------------------------------------------------------------------------------------
# Measurement.


@dataclass
class Recorder:
    """What this process sees: outputs (arrival s since t0, latency ms), diagnostics, RSS samples."""

    t0_ns: Optional[int] = None  # stamp of the sensors' schedule time 0
    outputs: List[Tuple[float, float]] = field(default_factory=list)
    node: List[Tuple[float, Dict[str, str]]] = field(default_factory=list)  # node status values
    inputs: List[Tuple[float, str, int, str, Dict[str, str]]] = field(default_factory=list)  # t, name, level, msg, v
    rss_kb: List[Tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def t(self, wall_ns: int) -> float:
        return (wall_ns - self.t0_ns) / NS if self.t0_ns is not None else float("nan")


def read_rss_kb(pid: int) -> Optional[int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


@dataclass
class SoakResult:
    settings: Dict[str, object]
    rows: List[Tuple[str, str, str, str]]  # metric, first window, last window, whole run / verdict
    values: Dict[str, float]
    failures: List[str]
    drops: List[Tuple[str, float, float]]

    def table(self) -> str:
        from ..reporting import markdown_table

        return markdown_table(["metric", "first window", "last window", "run"], [list(r) for r in self.rows])


def _p95(values: List[float]) -> float:
    from ..reporting import percentile

    return float(percentile(values, 95)) if values else float("nan")


def _median(values: List[float]) -> float:
    import numpy as np

    return float(np.median(values)) if values else float("nan")


def run_soak(minutes: float = 10.0, rate_scale: float = 2.0, seed: int = 0, card: Optional[str] = None,
             size: int = 128, warmup: float = 60.0, window: float = 60.0, drops_per_minute: float = 2.0,
             drop_seconds: Tuple[float, float] = (1.5, 6.0), cpu_threads: int = 1, max_rss_growth_mb: float = 50.0,
             p95_factor: float = 2.0, max_gap: float = 5.0, log_dir: Optional[Path] = None,
             progress=None) -> SoakResult:
    """Run the soak and evaluate it; see the module docstring."""
    from .. import resources
    from ..pipeline import config as node_config
    from ..ros import dds

    duration = minutes * 60.0
    if warmup + 2 * window > duration:
        raise ConfigError(f"warm-up {warmup:g} s + two {window:g} s windows do not fit in {duration:g} s")
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    card = card or node_config.parameter("model.card").default
    drops = drop_schedule(seed, duration, drops_per_minute, tuple(drop_seconds), start_s=warmup / 2)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="mmseg_soak_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = {"minutes": minutes, "rate_scale": rate_scale, "seed": seed, "card": card, "size": size,
                "warmup_s": warmup, "window_s": window, "drop_outs": len(drops), "logs": str(log_dir)}

    dds.configure_transport()  # before this process' participant; the children inherit it
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ..ros.spin import SpinThread

    rec = Recorder()
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node("mmseg_soak_listener", context=context)
    node_id, prefix = f"{NAMESPACE}/{NODE_NAME}", f"{NODE_NAME}: "  # statuses are named `<node name>: <task>`

    def on_labels(msg):
        now = time.time_ns()
        stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        with rec.lock:
            rec.outputs.append((rec.t(now), (now - stamp) / 1e6))

    def on_diagnostics(msg):
        t = rec.t(time.time_ns())
        with rec.lock:
            for s in msg.status:
                if s.hardware_id != node_id or not s.name.startswith(prefix):
                    continue
                level = s.level[0] if isinstance(s.level, bytes) else int(s.level)
                values = {kv.key: kv.value for kv in s.values}
                if s.name.endswith(": segmentation"):
                    rec.node.append((t, values))
                elif s.name.endswith(" input"):
                    rec.inputs.append((t, s.name[len(prefix):-len(" input")], level, s.message, values))

    listener.create_subscription(Image, f"{NAMESPACE}/{NODE_NAME}/labels", on_labels,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    spinner = SpinThread(listener, context=context)

    python = sys.executable
    node_log, sensors_log = log_dir / "node.log", log_dir / "sensors.log"
    node_cmd = [python, "-m", "mmseg_ros.ros.node", "--ros-args", "-r", f"__ns:={NAMESPACE}",
                "--params-file", str(resources.resolve("config/segment.yaml")), "-p", f"model.card:={card}",
                "-p", f"model.cpu_threads:={cpu_threads}", "-p", f"diagnostics.period:={DIAGNOSTICS_PERIOD_S}"]
    sensors_cmd = [python, "-m", "mmseg_ros.ros.sensors", "--size", str(size), "--rate-scale", str(rate_scale),
                   "--seed", str(seed), "--duration", str(duration), "--frames", "8",
                   *(x for sensor, a, b in drops for x in ("--drop", f"{sensor}@{a:g}-{b:g}")),
                   "--ros-args", "-r", f"__ns:={NAMESPACE}"]
    node = sensors = None
    stop_sampling = threading.Event()
    exit_code, node_alive = None, False
    try:
        say(f"soak: starting the node ({card}); logs in {log_dir}")
        node = subprocess.Popen(node_cmd, stdout=node_log.open("w"), stderr=subprocess.STDOUT)
        _wait(lambda: any(s for _, s in rec.node) or "active: subscribed" in node_log.read_text(errors="replace"),
              START_TIMEOUT_S, "the node to become active", node, node_log)

        def sample():
            while not stop_sampling.wait(RSS_SAMPLE_S):
                kb = read_rss_kb(node.pid)
                if kb is not None:
                    with rec.lock:
                        rec.rss_kb.append((rec.t(time.time_ns()), kb))

        sampler = threading.Thread(target=sample, daemon=True)
        say(f"soak: sensors at {rate_scale:g}x for {duration:g} s, {len(drops)} drop-outs")
        sensors = subprocess.Popen(sensors_cmd, stdout=sensors_log.open("w"), stderr=subprocess.STDOUT)
        _wait(lambda: re.search(r"t0=(\d+)\.(\d{9})", sensors_log.read_text(errors="replace")), 120.0,
              "the sensors to start publishing", sensors, sensors_log)
        sec, nsec = re.search(r"t0=(\d+)\.(\d{9})", sensors_log.read_text(errors="replace")).groups()
        with rec.lock:
            rec.t0_ns = int(sec) * NS + int(nsec)
            rec.outputs.clear()
            rec.node.clear()
            rec.inputs.clear()
        sampler.start()
        next_report = 60.0
        while sensors.poll() is None:
            time.sleep(0.5)
            if node.poll() is not None:
                break
            t = rec.t(time.time_ns())
            if t >= next_report:
                with rec.lock:
                    rss = rec.rss_kb[-1][1] / 1024 if rec.rss_kb else float("nan")
                    recent = [lat for at, lat in rec.outputs if at > t - 60.0]
                say(f"soak: t={t:.0f}s outputs {len(rec.outputs)}, last-minute p95 {_p95(recent):.0f} ms, "
                    f"RSS {rss:.0f} MB")
                next_report += 60.0
        time.sleep(1.5)  # the last outputs and diagnostics
        node_alive = node.poll() is None
        stop_sampling.set()
        if node_alive:
            node.send_signal(signal.SIGINT)
            try:
                exit_code = node.wait(15.0)
            except subprocess.TimeoutExpired:
                exit_code = None
        else:
            exit_code = node.returncode
    finally:
        stop_sampling.set()
        for proc in (sensors, node):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5.0)
        spinner.close()
    return _evaluate(rec, settings, drops, duration, warmup, window, max_rss_growth_mb, p95_factor, max_gap,
                     node_alive, exit_code, node_log.read_text(errors="replace"),
                     sensors_log.read_text(errors="replace"))


def _wait(predicate, timeout: float, what: str, proc, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise ConfigError(f"soak: {what}: the process ended with {proc.returncode}; see {log}")
        time.sleep(0.2)
    raise ConfigError(f"soak: timed out after {timeout:g} s waiting for {what}; see {log}")


def _evaluate(rec: Recorder, settings, drops, duration, warmup, window, max_rss_mb, p95_factor, max_gap,
              node_alive, exit_code, node_log: str, sensors_log: str) -> SoakResult:
    first, last = (warmup, warmup + window), (duration - window, duration)

    def inside(t, span):
        return span[0] <= t < span[1]

    failures: List[str] = []
    if not node_alive or exit_code != 0:
        failures.append(f"node alive at the end: {node_alive}, exit code {exit_code}")
    if "Traceback" in node_log:
        failures.append("a traceback in the node's log")

    # Memory.
    baseline = _median([kb for t, kb in rec.rss_kb if warmup - BASELINE_S <= t < warmup]) / 1024
    after = [kb / 1024 for t, kb in rec.rss_kb if t >= warmup]
    rss_first = _median([kb / 1024 for t, kb in rec.rss_kb if inside(t, first)])
    rss_last = _median([kb / 1024 for t, kb in rec.rss_kb if inside(t, last)])
    growth = (max(after) - baseline) if after else float("nan")
    if not growth < max_rss_mb:
        failures.append(f"RSS grew {growth:.1f} MB after warm-up (limit {max_rss_mb:g} MB)")

    # Latency: own stamp-to-receive and the node's reported p95 (median of its reports in the window).
    own = [[lat for t, lat in rec.outputs if inside(t, span)] for span in (first, last)]
    own_p95 = [_p95(v) for v in own]
    node_p95 = [_median([float(v["latency_p95_ms"]) for t, v in rec.node if inside(t, span) and v.get(
        "latency_p95_ms")]) for span in (first, last)]
    for what, (a, b) in (("own", own_p95), ("node", node_p95)):
        if not b <= p95_factor * a + P95_SLACK_MS:
            failures.append(f"{what} latency p95 last window {b:.0f} ms vs first {a:.0f} ms (allowed: "
                            f"{p95_factor:g} x first + {P95_SLACK_MS:g} ms)")
    times = sorted(t for t, _ in rec.outputs if t >= warmup)
    gaps = [b - a for a, b in zip([warmup, *times], [*times, duration])]
    longest_gap = max(gaps) if gaps else float("inf")
    if not longest_gap <= max_gap:
        failures.append(f"no output for {longest_gap:.1f} s (limit {max_gap:g} s)")

    # Drops: every emitted set published, superseded (latest wins) or below min; every sensor seen missing.
    final = rec.node[-1][1] if rec.node else {}
    count = {k: int(final.get(k, 0) or 0) for k in ("published", "sets_emitted", "dropped_superseded",
                                                    "dropped_below_min")}
    accounted = count["published"] + count["dropped_superseded"]
    if not accounted <= count["sets_emitted"] <= accounted + count["dropped_below_min"] + 2:
        failures.append(f"sets not accounted for: {count}")
    if len([t for t, _ in rec.outputs]) > count["published"]:
        failures.append(f"received {len(rec.outputs)} labels, the node published {count['published']}")
    reported_missing = {name for t, name, level, message, _ in rec.inputs if message.startswith("missing")}
    dropped_sensors = {sensor for sensor, _, _ in drops}
    if not dropped_sensors <= reported_missing:
        failures.append(f"drop-outs of {sorted(dropped_sensors - reported_missing)} never reported as missing")
    inputs_final: Dict[str, Dict[str, str]] = {}
    for t, name, level, message, values in rec.inputs:
        inputs_final[name] = values
    sent = re.search(r"sent (.*?)(?:; dropped (.*?))?(?:; skipped late (.*))?$", sensors_log.strip().splitlines()[-1]
                     if sensors_log.strip() else "")

    def fmt(x, digits=0):
        return "" if x != x else f"{x:.{digits}f}"

    outputs_per_window = [len(v) / window for v in own]
    rows = [
        ("outputs (Hz)", fmt(outputs_per_window[0], 1), fmt(outputs_per_window[1], 1),
         f"{len(rec.outputs)} labels"),
        ("latency p50, stamp to receive (ms)", fmt(_median(own[0])), fmt(_median(own[1])),
         fmt(_median([lat for t, lat in rec.outputs if t >= warmup]))),
        ("latency p95, stamp to receive (ms)", fmt(own_p95[0]), fmt(own_p95[1]),
         f"ratio {fmt(own_p95[1] / own_p95[0], 2) if own_p95[0] else ''}"),
        ("node latency_p95_ms (ms)", fmt(node_p95[0]), fmt(node_p95[1]),
         f"ratio {fmt(node_p95[1] / node_p95[0], 2) if node_p95[0] else ''}"),
        ("node VmRSS (MB)", fmt(rss_first, 1), fmt(rss_last, 1),
         f"baseline {fmt(baseline, 1)}, growth {fmt(growth, 1)}"),
        ("longest output gap (s)", "", "", fmt(longest_gap, 2)),
        ("sets emitted / published", "", "", f"{count['sets_emitted']} / {count['published']}"),
        ("dropped_superseded / dropped_below_min", "", "",
         f"{count['dropped_superseded']} / {count['dropped_below_min']}"),
        ("drop-outs (sensor windows)", "", "", ", ".join(f"{s}@{a:g}-{b:g}" for s, a, b in drops)),
    ]
    for name in SENSORS:
        v = inputs_final.get(name, {})
        dropped = ", ".join(f"{k[len('dropped.'):]} {n}" for k, n in v.items() if k.startswith("dropped.") and n != "0")
        rows.append((f"{name}: received / used / superseded / missing_from_sets", "", "",
                     f"{v.get('received', '')} / {v.get('used', '')} / {v.get('superseded', '')} / "
                     f"{v.get('missing_from_sets', '')}" + (f"; dropped {dropped}" if dropped else "")))
    if sent:
        rows.append(("sensors: sent; dropped by schedule", "", "", f"{sent.group(1)}; {sent.group(2) or '-'}"
                     + (f"; skipped late {sent.group(3)}" if sent.group(3) else "")))
    rows.append(("verdict", "", "", "PASS" if not failures else "FAIL: " + "; ".join(failures)))
    values = {"rss_growth_mb": growth, "rss_baseline_mb": baseline, "own_p95_first_ms": own_p95[0],
              "own_p95_last_ms": own_p95[1], "node_p95_first_ms": node_p95[0], "node_p95_last_ms": node_p95[1],
              "longest_gap_s": longest_gap, "outputs": float(len(rec.outputs)),
              **{k: float(v) for k, v in count.items()}}
    return SoakResult(settings, rows, values, failures, drops)


def main(args) -> int:
    result = run_soak(minutes=args.minutes, rate_scale=args.rate_scale, seed=args.seed, card=args.card,
                      size=args.size, warmup=args.warmup, window=args.window, drops_per_minute=args.drops_per_minute,
                      drop_seconds=tuple(args.drop_seconds), cpu_threads=args.cpu_threads,
                      max_rss_growth_mb=args.max_rss_growth_mb, p95_factor=args.p95_factor, max_gap=args.max_gap)
    s = result.settings
    print(f"soak: {s['minutes']:g} min, card {s['card']}, {s['size']} px, sensors at {s['rate_scale']:g}x, seed "
          f"{s['seed']}, {s['drop_outs']} drop-outs; first window [{s['warmup_s']:g}, "
          f"{s['warmup_s'] + s['window_s']:g}) s, last window the final {s['window_s']:g} s\n")
    print(result.table())
    if args.json:
        print(json.dumps({"settings": s, "values": result.values, "failures": result.failures}))
    return 0 if not result.failures else 1
