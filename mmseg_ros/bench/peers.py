"""The child processes of the multi-process benchmarks (`bench node`, `bench dds`) talk to their parent in JSON lines
on stdout, one per event: `{"event": NAME, ...fields}`."""
from __future__ import annotations

import json
import select
import time

from ..errors import ConfigError


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def read_event(peer, event: str, timeout: float, who: str) -> dict:
    """The first `event` line the child `peer` prints within `timeout` s (other output is skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([peer.stdout], [], [], 0.1)[0]:
            line = peer.stdout.readline()
            if not line:
                break
            if line.startswith("{") and json.loads(line).get("event") == event:
                return json.loads(line)
    raise ConfigError(f"{who} did not report {event!r} (exit code {peer.poll()})")
