"""Everything that imports rclpy: segment_node (`node` the process, `segment` the wiring, `parameters`,
`diagnostics`), the DDS transport set-up (`dds`), spin/shutdown helpers (`spin`) and `mmseg sensors` (`sensors`).
The logic lives in `mmseg_ros.pipeline`; these modules subscribe, publish and hand messages over."""
