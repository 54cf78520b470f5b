"""segment_node's parameters on the ROS side: declare the table of `pipeline.config` with descriptors (description,
choices, ranges), read the values back, refuse changes after configure, and declare the read-only class names."""
from __future__ import annotations

from typing import Any, Dict, Sequence

from ..errors import ConfigError
from ..pipeline import config as node_config

QOS_OVERRIDES = "qos_overrides."  # rclpy declares these when a publisher or subscription is created


def declare(node) -> None:
    """Every entry of the parameter table, typed and described (`ros2 param describe` shows them)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    types = {
        node_config.STRING: (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
        node_config.BOOL: (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
        node_config.INTEGER: (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
        node_config.DOUBLE: (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
        node_config.STRING_ARRAY: (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
        node_config.DOUBLE_ARRAY: (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
    }
    for p in node_config.PARAMETERS:
        wire_type, value_type = types[p.type]
        descriptor = ParameterDescriptor(name=p.name, type=wire_type, description=p.description)
        if p.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(p.choices)
        if p.type == node_config.INTEGER and p.low is not None:
            descriptor.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high),
                                                     step=int(p.step or 0))]
        elif p.type == node_config.DOUBLE and p.low is not None:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(p.low), to_value=float(p.high),
                                                                  step=0.0)]
        try:
            # A default of None declares the type only (rcl cannot hold an empty list): unset reads as [].
            node.declare_parameter(p.name, value_type if p.default is None else p.default, descriptor)
        except ParameterException as exc:
            raise ConfigError(f"parameter {p.name}: {exc}") from None
    _refuse_unknown_overrides(node)


def _refuse_unknown_overrides(node) -> None:
    """rcl applies a params file's values only to declared parameters and drops the rest without a word, so a typo
    (`sync.slopp`) or a key of another version would silently run the defaults: refuse them instead."""
    later = (node_config.CLASS_NAMES_PARAMETER,)  # declared at configure
    unknown = sorted(name for name in getattr(node, "_parameter_overrides", {})
                     if not node.has_parameter(name) and name not in later and not name.startswith(QOS_OVERRIDES))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} in the parameters given (params file or -p); "
                          f"{node.get_name()} declares {list(node_config.PARAMETER_NAMES)} "
                          f"(and {QOS_OVERRIDES}<topic>.<publisher|subscription>.<policy>)")


def read(node) -> Dict[str, Any]:
    """{name: value} of the table (None for a parameter declared without a value)."""
    from rclpy.exceptions import ParameterUninitializedException

    values = {}
    for name in node_config.PARAMETER_NAMES:
        try:
            values[name] = node.get_parameter(name).value
        except ParameterUninitializedException:
            values[name] = None
    return values


def refuse_changes_once_configured(node, is_configured) -> None:
    """Parameters are read at configure: a later change would silently do nothing, so it is refused with why."""
    from rcl_interfaces.msg import SetParametersResult

    def on_set(params):
        changed = [p.name for p in params if p.name in node_config.PARAMETER_NAMES]
        if changed and is_configured():
            return SetParametersResult(successful=False, reason=(
                f"{changed} are read when the node is configured; restart it (or cleanup and configure the "
                "lifecycle node) to change them"))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)


def declare_class_names(node, names: Sequence[str]) -> None:
    """The read-only `class_names` parameter, declared at the first configure; a later model must keep them."""
    from rcl_interfaces.msg import ParameterDescriptor, ParameterType

    param = node_config.CLASS_NAMES_PARAMETER
    if node.has_parameter(param):
        if tuple(node.get_parameter(param).value) != tuple(names):
            raise ConfigError(f"the model's classes differ from the read-only parameter {param} declared at the "
                              "first configure; restart the node to switch class sets")
        return
    node.declare_parameter(param, list(names), ParameterDescriptor(
        type=ParameterType.PARAMETER_STRING_ARRAY, read_only=True,
        description="class id -> name of ~/labels (also latched on ~/class_names)"), ignore_override=True)
