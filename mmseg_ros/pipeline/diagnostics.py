"""What segment_node reports on /diagnostics, assembled without ROS: one status per input, one for the node.

Names follow diagnostic_updater (`<node name>: <task>`, the node's name without its namespace, so aggregator rules
written for it match); hardware_id is the node's fully qualified name (which instance, under which namespace).

Per input (name "<node>: <modality> input"):
  ERROR "bad input: <reason>"  a message of this input was rejected within diagnostics.error_hold
  WARN/ERROR "missing: ..."    nothing arrived for sync.anchor_timeout (or never): WARN while outputs still flow
                               from the other inputs, ERROR when they do not; when the topic has publishers all the
                               same, the message says the transport loses them and names the fix (`mmseg dds env`)
  WARN  "transport: ..."       the middleware reported messages of this input lost recently (large images between
                               processes without the shared-memory profile on the publisher's side)
  WARN  "stale: ..."           arriving, but its newest stamp is that far behind the other inputs
  OK    "ok"
  values: topic, state, anchor, rate_hz, last_stamp, received, used, superseded, dropped.<reason>,
          missing_from_sets, used_in_last_output, bad_messages, last_error, publishers, lost_recent, lost_total
Node (name "<node>: segmentation"):
  ERROR when every input is missing (no output can come) or no output came for diagnostics.output_timeout (since
  the last one, or since activation); WARN when the last output lacked a subscribed input (degraded); OK otherwise.
  values: card, device, anchor, rate_in_hz (sets per second), rate_out_hz, published, sets_emitted,
          dropped_superseded (latest wins), dropped_below_min, latency_p50_ms / latency_p95_ms (anchor stamp to
          publish, node clock), wait_p50_ms / wait_p95_ms (the set's last input's arrival to the model starting: what
          the synchronizer and the worker queue add), anchor_wait_p50_ms / anchor_wait_p95_ms (the anchor's arrival
          to the model starting: the inputs' own spread included), model_p50_ms / model_p95_ms (engine: preprocess +
          forward + postprocess),
          modalities_used (the last output's), missing_inputs, last_output_age_s, router.<level>.<modality> (MLE-SAM)
Levels are diagnostic_msgs/DiagnosticStatus' OK / WARN / ERROR.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..sync import NS_PER_S, InputCounts, InputState, InputStatus

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
TRANSPORT_HINT = ("large images between processes need the shared-memory profile in the PUBLISHER's environment: "
                  "run `mmseg dds env` in the camera driver's shell")


@dataclass(frozen=True)
class Status:
    level: int
    name: str
    message: str
    hardware_id: str
    values: Tuple[Tuple[str, str], ...]

    def value(self, key: str) -> Optional[str]:
        return dict(self.values).get(key)


@dataclass(frozen=True)
class InputReport:
    name: str
    topic: str
    status: InputStatus
    counts: InputCounts
    recent_error: Optional[str]  # within the hold time
    bad_messages: int
    last_error: str
    used_in_last_output: bool
    publishers: Optional[int] = None  # on the input's topic (graph), None when not known
    lost_recent: int = 0  # messages the middleware reported lost within the hold time
    lost_total: int = 0


@dataclass(frozen=True)
class NodeReport:
    card: str
    device: str
    anchor: str
    rate_in_hz: Optional[float]
    rate_out_hz: Optional[float]
    published: int
    sets_emitted: int
    dropped_superseded: int
    dropped_below_min: int
    latency_ms: Optional[Tuple[float, float]]
    wait_ms: Optional[Tuple[float, float]]
    model_ms: Optional[Tuple[float, float]]
    modalities_used: Tuple[str, ...]
    last_output_age_s: Optional[float]  # since the last output, or since activation when there was none
    output_timeout_s: float
    hardware_id: str = ""  # the node's fully qualified name
    anchor_wait_ms: Optional[Tuple[float, float]] = None  # anchor arrival -> model start (inputs' spread included)
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. router weights


def input_status(node: str, report: InputReport, now_ns: int, outputs_flowing: bool = False,
                 hardware_id: str = "") -> Status:
    st = report.status
    if report.recent_error is not None:
        level, message = ERROR, f"bad input: {report.recent_error}"
    elif st.state == InputState.MISSING:
        level = WARN if outputs_flowing else ERROR
        if st.last_arrival_ns is None:
            message = "missing: nothing received yet"
        else:
            message = f"missing: nothing received for {(now_ns - st.last_arrival_ns) / NS_PER_S:.1f} s"
        if report.publishers:
            message += (f" although {report.publishers} publisher(s) exist"
                        + (f" and {report.lost_recent} message(s) were lost" if report.lost_recent else "")
                        + f": {TRANSPORT_HINT}")
    elif report.lost_recent:
        level, message = WARN, f"transport: {report.lost_recent} message(s) lost recently; {TRANSPORT_HINT}"
    elif st.state == InputState.STALE:
        level, message = WARN, "stale: its newest stamp lags the other inputs"
    else:
        level, message = OK, "ok"
    c = report.counts
    values: Dict[str, Any] = {
        "topic": report.topic,
        "state": st.state.value,
        "anchor": st.is_anchor,
        "rate_hz": _num(st.rate_hz),
        "last_stamp": "" if st.last_stamp_ns is None else f"{st.last_stamp_ns / NS_PER_S:.6f}",
        "received": c.received,
        "used": c.used,
        "superseded": c.superseded,
        **{f"dropped.{reason}": n for reason, n in c.dropped.items()},
        "missing_from_sets": sum(c.missing.values()),
        "used_in_last_output": report.used_in_last_output,
        "bad_messages": report.bad_messages,
        "last_error": report.last_error,
        "publishers": "" if report.publishers is None else report.publishers,
        "lost_recent": report.lost_recent,
        "lost_total": report.lost_total,
    }
    return Status(level, f"{node}: {report.name} input", message, hardware_id or node, _strings(values))


def outputs_flowing(report: NodeReport) -> bool:
    return report.last_output_age_s is not None and report.published > 0 and \
        report.last_output_age_s <= report.output_timeout_s


def node_status(node: str, report: NodeReport, inputs: Sequence[InputReport], period_s: float) -> Status:
    missing = [r.name for r in inputs if r.status.state == InputState.MISSING]
    subscribed = [r.name for r in inputs]
    quiet = not outputs_flowing(report)
    lacking = [m for m in subscribed if m not in report.modalities_used]
    if len(missing) == len(subscribed):
        level, message = ERROR, f"no input: all {len(subscribed)} inputs missing ({', '.join(missing)}); no output"
    elif quiet and report.last_output_age_s is not None and report.last_output_age_s > report.output_timeout_s:
        what = "no output yet" if report.published == 0 else "no output"
        level, message = ERROR, f"{what} for {report.last_output_age_s:.1f} s (diagnostics.output_timeout " \
                                f"{report.output_timeout_s:g} s)"
    elif quiet:
        level, message = WARN, "starting: no output yet"
    elif lacking:
        level, message = WARN, f"degraded: last output without {', '.join(lacking)}"
    else:
        level, message = OK, f"ok: all {len(subscribed)} inputs"
    if not quiet and report.rate_out_hz is not None and level != ERROR:
        message += f"; {report.rate_out_hz:.1f} Hz out"
    values: Dict[str, Any] = {
        "card": report.card,
        "device": report.device,
        "anchor": report.anchor,
        "rate_in_hz": _num(report.rate_in_hz),
        "rate_out_hz": _num(report.rate_out_hz),
        "published": report.published,
        "sets_emitted": report.sets_emitted,
        "dropped_superseded": report.dropped_superseded,
        "dropped_below_min": report.dropped_below_min,
        "latency_p50_ms": _num(report.latency_ms[0] if report.latency_ms else None),
        "latency_p95_ms": _num(report.latency_ms[1] if report.latency_ms else None),
        "wait_p50_ms": _num(report.wait_ms[0] if report.wait_ms else None),
        "wait_p95_ms": _num(report.wait_ms[1] if report.wait_ms else None),
        "anchor_wait_p50_ms": _num(report.anchor_wait_ms[0] if report.anchor_wait_ms else None),
        "anchor_wait_p95_ms": _num(report.anchor_wait_ms[1] if report.anchor_wait_ms else None),
        "model_p50_ms": _num(report.model_ms[0] if report.model_ms else None),
        "model_p95_ms": _num(report.model_ms[1] if report.model_ms else None),
        "modalities_used": ",".join(report.modalities_used),
        "missing_inputs": ",".join(missing),
        "last_output_age_s": _num(report.last_output_age_s),
        **report.extra,
    }
    return Status(level, f"{node}: segmentation", message, report.hardware_id or node, _strings(values))


def statuses(node: str, report: NodeReport, inputs: Sequence[InputReport], now_ns: int,
             period_s: float) -> List[Status]:
    """The node's status first, then one per input in configured order. `node` is the node's name (no namespace)."""
    flowing = outputs_flowing(report)
    return [node_status(node, report, inputs, period_s)] + [
        input_status(node, r, now_ns, flowing, report.hardware_id) for r in inputs]


def _num(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.3f}"


def _strings(values: Mapping[str, Any]) -> Tuple[Tuple[str, str], ...]:
    def text(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    return tuple((k, text(v)) for k, v in values.items())
