"""`mmseg demo`: the whole pipeline on generated data, with sensors failing on purpose.

This version exercises the ROS-free front half — message codecs and the drop-tolerant synchronizer — on a
simulated 4-sensor rig (camera 10 Hz, LiDAR 10 Hz offset, events 20 Hz, depth 10 Hz, stamp jitter), with the depth
sensor dropping out and later the camera dying, and prints what was synchronized, what was missing and why.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np

from . import modalities, msgs
from .sync import NS_PER_S, SyncConfig, Synchronizer


@dataclass(frozen=True)
class Sensor:
    modality: str
    encoding: str
    rate_hz: float
    offset_s: float


# The demo rig: the registry's four driving modalities with typical rates and encodings.
RIG = (
    Sensor("rgb", "rgb8", 10.0, 0.0),
    Sensor("depth", "32FC1", 10.0, 0.004),
    Sensor("event", "rgb8", 20.0, 0.002),
    Sensor("lidar", "32FC1", 10.0, 0.025),
)


def configure(parser) -> None:
    parser.add_argument("--seconds", type=float, default=6.0, help="simulated drive length (default 6)")
    parser.add_argument("--size", type=int, default=256, help="image size in px (default 256)")
    parser.add_argument("--drop", action="append", default=None, metavar="MOD@T0-T1",
                        help="sensor outage, repeatable (default: depth@1.5-3 and rgb@4-5)")
    parser.add_argument("--seed", type=int, default=0)


def parse_drop(text: str) -> Tuple[str, float, float]:
    """'depth@1.5-3' -> ('depth', 1.5, 3.0)."""
    from .errors import ConfigError

    try:
        name, window = text.split("@")
        t0, t1 = (float(v) for v in window.split("-"))
    except ValueError:
        raise ConfigError(f"--drop expects MOD@T0-T1 (e.g. depth@5-10), got {text!r}") from None
    if t1 <= t0:
        raise ConfigError(f"--drop {text!r}: the end must come after the start")
    return modalities.get(name).name, t0, t1


def _frame(sensor: Sensor, size: int, t: float) -> np.ndarray:
    """A cheap moving pattern in the sensor's encoding (the real scenes come from the synthetic generator)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin((x + 40.0 * t) / 17.0) * np.cos(y / 23.0)
    if sensor.encoding == "32FC1":
        return (2.0 + 40.0 * wave).astype(np.float32)
    return np.repeat((255 * wave).astype(np.uint8)[:, :, None], 3, axis=2)


def _messages(seconds: float, size: int, drops, rng: random.Random) -> Iterator[Tuple[int, str, object]]:
    """(arrival_ns, modality, Image message) in arrival order; dropped windows send nothing."""
    events = []
    for sensor in RIG:
        period = 1.0 / sensor.rate_hz
        for k in range(int(seconds * sensor.rate_hz)):
            stamp = sensor.offset_s + k * period + rng.uniform(-0.003, 0.003)
            if any(m == sensor.modality and t0 <= stamp < t1 for m, t0, t1 in drops):
                continue
            latency = rng.uniform(0.005, 0.03)  # transport + driver delay
            events.append((int((stamp + latency) * NS_PER_S), int(stamp * NS_PER_S), sensor))
    for arrival, stamp, sensor in sorted(events, key=lambda e: e[0]):
        header = msgs.Header(stamp=msgs.Time(sec=stamp // NS_PER_S, nanosec=stamp % NS_PER_S),
                             frame_id=f"{sensor.modality}_link")
        yield arrival, sensor.modality, msgs.numpy_to_image(_frame(sensor, size, stamp / NS_PER_S), sensor.encoding,
                                                             header, ros=False)


def main(args) -> int:
    drops = [parse_drop(d) for d in (args.drop or ["depth@1.5-3", "rgb@4-5"])]
    names = [s.modality for s in RIG]
    sync = Synchronizer(SyncConfig.from_seconds(names, slop=0.05, max_wait=0.1, silence_timeout=0.3))
    print(f"mmseg demo: {args.seconds:.0f} s simulated drive, {args.size}x{args.size} images, sensors "
          + ", ".join(f"{s.modality} {s.rate_hz:.0f} Hz {s.encoding}" for s in RIG))
    for name, t0, t1 in drops:
        print(f"  outage: {name} from {t0:g} s to {t1:g} s")

    sets = []
    decode_s = 0.0
    poll_step = NS_PER_S // 100  # the node polls every 10 ms
    next_poll = 0
    for arrival, name, msg in _messages(args.seconds, args.size, drops, random.Random(args.seed)):
        while next_poll <= arrival:
            sets += sync.poll(next_poll)
            next_poll += poll_step
        t0 = time.perf_counter()
        image = msgs.image_for_model(msg)  # what the node does in its callback
        decode_s += time.perf_counter() - t0
        sets += sync.add(name, msgs_stamp(msg), image, arrival)
    sets += sync.poll(next_poll + 10 * NS_PER_S)

    print("\n  time (s)  anchor  present                      missing")
    previous = None
    for s in sets:
        row = (s.anchor, s.present, tuple(f"{k}:{v.value}" for k, v in s.missing.items()))
        if row != previous:  # print only where the situation changes
            print(f"  {s.stamp_ns / NS_PER_S:7.2f}   {s.anchor:6s}  {'+'.join(s.present):27s}  "
                  f"{', '.join(row[2]) or '-'}")
            previous = row
    stats = sync.stats()
    totals = stats.totals()
    print(f"\n  sets emitted: {stats.sets_emitted}, anchor switches: {stats.anchor_switches}, "
          f"messages received {totals.received}, used {totals.used}, superseded {totals.superseded}, "
          f"dropped {sum(totals.dropped.values())}")
    print(f"  decode time per message: {1000 * decode_s / max(totals.received, 1):.3f} ms (zero-copy views)")
    with_depth = sum("depth" in s.present for s in sets)
    print(f"  sets with depth: {with_depth} / {len(sets)}")
    return 0 if sets else 1


def msgs_stamp(msg) -> int:
    return int(msg.header.stamp.sec) * NS_PER_S + int(msg.header.stamp.nanosec)
