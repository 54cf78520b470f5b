"""The pipeline's diagnostic statuses (plain data) as a diagnostic_msgs/DiagnosticArray."""
from __future__ import annotations

from typing import Iterable

from ..pipeline.diagnostics import Status


def to_array(statuses: Iterable[Status], stamp):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    array = DiagnosticArray()
    array.header.stamp = stamp
    for s in statuses:
        array.status.append(DiagnosticStatus(
            level=bytes([s.level]), name=s.name, message=s.message, hardware_id=s.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in s.values]))
    return array
