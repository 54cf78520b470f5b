"""Large images between two real ROS 2 processes over Fast DDS, best effort (sensor-data QoS), decoded by our codecs.

SPEC §3: with Fast DDS' built-in transports best-effort samples above ~512 KB are lost between processes; the
shipped profile (config/fastdds_shm.xml, set by mmseg_ros.dds.configure_transport) must deliver them.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmseg_ros import dds

pytest.importorskip("rclpy")
pytest.importorskip("sensor_msgs.msg")

PEER = Path(__file__).with_name("dds_peer.py")
FRAMES = 40
RATE_HZ = 20.0


def _events(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            out[event["event"]] = event
    return out


def exchange(profile: bool) -> dict:
    """Run a subscriber and a publisher process; returns the subscriber's result and the publisher's report."""
    env = dict(os.environ)
    env.pop(dds.PROFILE_VARIABLE, None)  # the peers decide: shipped profile, or none at all
    flag = [] if profile else ["--no-profile"]
    cmd = [sys.executable, str(PEER)]
    sub = subprocess.Popen(cmd + ["sub", "--timeout", "40", *flag], env=env, text=True,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([sub.stdout], [], [], 20)
        assert ready, "subscriber did not start within 20 s"
        assert json.loads(sub.stdout.readline())["event"] == "ready"
        pub = subprocess.run(cmd + ["pub", "--frames", str(FRAMES), "--rate", str(RATE_HZ), *flag], env=env,
                             text=True, capture_output=True, timeout=40)
        time.sleep(0.3)  # the last samples are still being taken by the subscriber
        out, err = sub.communicate("stop\n", timeout=20)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    sent = _events(pub.stdout).get("sent")
    result = _events(out).get("result")
    assert pub.returncode == 0 and sent and sent["matched"], f"publisher failed: {pub.stdout}\n{pub.stderr[-2000:]}"
    assert sub.returncode == 0 and result, f"subscriber failed (rc {sub.returncode}): {out}\n{err[-2000:]}"
    return {"sent": sent, "result": result}


def _report(run: dict) -> str:
    topics = run["result"]["topics"]
    return ", ".join(
        f"{enc}: {t['valid']}/{run['sent']['frames']} valid ({t['received']} received, median latency "
        f"{t['latency_ms_median']} ms)" for enc, t in topics.items()
    )


def test_shipped_profile_delivers_large_best_effort_images(record_property):
    run = exchange(profile=True)
    assert "fastdds_shm.xml" in run["result"]["transport"] and "fastdds_shm.xml" in run["sent"]["transport"]
    record_property("with_profile", _report(run))
    print("with profile:", _report(run))
    assert not run["result"]["errors"], run["result"]["errors"]
    for enc, stats in run["result"]["topics"].items():
        assert stats["valid"] == stats["received"], f"{enc}: corrupted frames: {stats}"
        assert stats["valid"] >= 0.95 * FRAMES, f"{enc}: only {stats['valid']}/{FRAMES} arrived intact"
        assert len(set(stats["counters"])) == len(stats["counters"]), f"{enc}: duplicated frames"


def test_without_profile_large_best_effort_images_are_lost(record_property):
    """The measurement that justifies shipping the profile. Where a machine's defaults happen to carry the images
    (then the profile is merely harmless) the test is skipped rather than failed."""
    run = exchange(profile=False)
    record_property("without_profile", _report(run))
    print("without profile:", _report(run))
    valid = min(stats["valid"] for stats in run["result"]["topics"].values())
    # exchange() already asserted that both peers ran and matched, so losses here are the transport's, not discovery's.
    if valid >= 0.95 * FRAMES:
        pytest.skip(f"Fast DDS defaults delivered the images on this machine: {_report(run)}")
