"""sensor_msgs Image / PointCloud2 / CameraInfo <-> numpy, and LiDAR points -> sparse range image in a camera.

One job per module: `types` (plain stand-ins and message building), `buffers` (output arrays that messages carry
without a copy), `image` (the Image codec and the output images),
`pointcloud` (the PointCloud2 codec), `compressed` (CompressedImage in image_transport's compressed and
compressedDepth formats), `camera` (the camera model), `projection` (points into a camera, both ways). Everything
public is re-exported here, so callers write `msgs.image_to_numpy(...)`.

Works on any object that has the message's fields (rclpy messages, rosbags messages, the plain dataclasses in
`types`), so it imports no rclpy and no torch. Builders return real `sensor_msgs.msg` messages when that package is
importable (imported lazily, only when a message is built) and the plain dataclasses otherwise.

Conventions:
* Decoding is zero-copy where the layout allows: the result is a (possibly read-only) numpy view of `msg.data`.
  A copy is made only to turn a foreign byte order into the machine's, or to drop PointCloud2 row padding.
* Single-channel images decode to (H, W), multi-channel ones to (H, W, C), channels in the encoding's order.
* Projected range images are float32 with 0 meaning "no return" (0 is never a valid range, stays finite through
  normalisation, and is what `preprocess` treats as missing); nearest point (smallest camera depth) wins a pixel.
* Anything malformed raises MessageError naming the field and the values.
"""
from .buffers import MessageBuffers, backing_bytes
from .camera import DISTORTION_MODELS, MAX_CAMERA_PIXELS, Camera, camera_from_info, numpy_to_camera_info
from .projection import (PROJECTION_VALUES, Projection, cloud_xyz, pointcloud_to_range_image, project_cloud,
                         project_points)
from .compressed import (COMPRESSED, COMPRESSED_DEPTH, TRANSPORTS, CompressedFormat, compressed_to_numpy,
                         is_compressed, numpy_to_compressed, numpy_to_compressed_depth, parse_format)
from .image import (PixelFormat, color_to_image, confidence_to_image, image_for_model, image_to_numpy, label_encoding,
                    labels_to_image, numpy_to_image, pixel_format)
from .pointcloud import (MAX_POINT_STEP, POINT_FIELD_DTYPES, numpy_to_pointcloud, pointcloud_dtype, pointcloud_to_numpy,
                         pointcloud_xyz)
from .types import (CameraInfo, CompressedImage, Header, Image, PointCloud2, PointField, Time, new_message,
                    ros_messages_available)

__all__ = [
    "MessageBuffers", "backing_bytes",
    "DISTORTION_MODELS", "MAX_CAMERA_PIXELS", "PROJECTION_VALUES", "Camera", "camera_from_info",
    "numpy_to_camera_info", "pointcloud_to_range_image", "project_points", "Projection", "project_cloud", "cloud_xyz",
    "COMPRESSED", "COMPRESSED_DEPTH", "TRANSPORTS", "CompressedFormat", "compressed_to_numpy", "is_compressed",
    "numpy_to_compressed", "numpy_to_compressed_depth", "parse_format", "PixelFormat", "color_to_image",
    "confidence_to_image", "image_for_model", "image_to_numpy", "label_encoding", "labels_to_image", "numpy_to_image",
    "pixel_format", "MAX_POINT_STEP", "POINT_FIELD_DTYPES", "numpy_to_pointcloud", "pointcloud_dtype",
    "pointcloud_to_numpy", "pointcloud_xyz", "CameraInfo", "CompressedImage", "Header", "Image", "PointCloud2",
    "PointField", "Time", "new_message", "ros_messages_available",
]
