"""`mmseg bench codec`: Image decode/encode per encoding and PointCloud2 decode + projection, medians in ms.

Decode is `image_to_numpy` (a view of msg.data when the byte order is native) and `image_for_model` (colour made
RGB, still a view; the copy happens in preprocess' float conversion). Encode is `numpy_to_image` into a real
sensor_msgs/Image when sensor_msgs is importable (the node's path), else into the plain stand-in. The cloud is a
synthetic 360-degree scan around a pinhole camera. CompressedImage: JPEG / PNG (compressed transport) and
compressedDepth decode (`compressed_to_numpy`, header checks included) and encode at --compressed-size (default
1920x1200, a common automotive camera), on a smooth image with sensor noise (random bytes would not compress).
"""
from __future__ import annotations

ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC2", "8UC3", "16UC1", "32FC1")


def configure(parser):
    parser.add_argument("--size", type=int, default=1024, help="image height and width (default 1024)")
    parser.add_argument("--points", type=int, default=100_000, help="PointCloud2 points (default 100000)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per cell; the median is printed")
    parser.add_argument("--encodings", nargs="+", default=list(ENCODINGS), metavar="ENCODING")
    parser.add_argument("--paint-points", type=int, nargs="+", default=[100_000, 250_000], metavar="N",
                        help="cloud sizes for painting (outputs.points; default 100000 250000)")
    parser.add_argument("--compressed-size", default="1920x1200", metavar="WxH",
                        help="CompressedImage size (default 1920x1200)")


def _image(encoding: str, size: int, rng):
    import numpy as np

    from .. import msgs

    fmt = msgs.pixel_format(encoding)
    shape = (size, size) if fmt.channels == 1 else (size, size, fmt.channels)
    if np.dtype(fmt.dtype).kind == "f":
        return rng.uniform(0.0, 80.0, shape).astype(fmt.dtype)
    return rng.integers(0, np.iinfo(fmt.dtype).max, shape, dtype=fmt.dtype, endpoint=True)


def _scan(points: int, rng):
    """A LiDAR-like cloud: 64 rings, points on a cylinder of varied radius, with intensity and padding."""
    import numpy as np

    dtype = np.dtype({"names": ["x", "y", "z", "intensity", "ring"], "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
                      "offsets": [0, 4, 8, 16, 20], "itemsize": 32})
    cloud = np.zeros(points, dtype)
    azimuth = rng.uniform(-np.pi, np.pi, points)
    elevation = np.deg2rad(rng.integers(-16, 16, points) * 1.0)
    radius = rng.uniform(2.0, 60.0, points)
    cloud["x"] = radius * np.cos(elevation) * np.cos(azimuth)
    cloud["y"] = radius * np.cos(elevation) * np.sin(azimuth)
    cloud["z"] = radius * np.sin(elevation)
    cloud["intensity"] = rng.uniform(0, 255, points)
    cloud["ring"] = rng.integers(0, 64, points)
    return cloud


def main(args) -> int:
    import numpy as np

    from .. import msgs
    from ..reporting import markdown_table, median_ms
    from .timing import time_call

    rng = np.random.default_rng(0)
    real = msgs.ros_messages_available()
    rows = []
    for encoding in args.encodings:
        image = _image(encoding, args.size, rng)
        native = msgs.numpy_to_image(image, encoding)
        swapped = msgs.numpy_to_image(image, encoding, is_bigendian=True)
        padded = msgs.numpy_to_image(image, encoding, step=native.step + 64)
        rows.append([
            encoding, f"{len(native.data) / 2**20:.1f}",
            median_ms(time_call(lambda: msgs.image_to_numpy(native), args.repeat)),
            median_ms(time_call(lambda: msgs.image_to_numpy(padded), args.repeat)),
            median_ms(time_call(lambda: msgs.image_to_numpy(swapped), args.repeat)),
            median_ms(time_call(lambda: msgs.image_for_model(native), args.repeat)),
            median_ms(time_call(lambda: msgs.numpy_to_image(image, encoding), args.repeat)),
        ])
    print(f"Images {args.size}x{args.size}, median of {args.repeat} runs, ms; encode into "
          f"{'sensor_msgs/Image' if real else 'the plain Image stand-in (sensor_msgs not importable)'}")
    print(markdown_table(["encoding", "MB", "decode", "decode padded step", "decode big-endian",
                          "image_for_model (RGB view)", "encode"], rows))

    cloud = _scan(args.points, rng)
    msg = msgs.numpy_to_pointcloud(cloud)
    info = msgs.numpy_to_camera_info([600.0, 0, 512, 0, 600.0, 384, 0, 0, 1], 1024, 768,
                                     d=(-0.1, 0.01, 0.001, -0.001, 0.0))
    camera = msgs.camera_from_info(info)
    lidar_to_camera = np.array([[0, -1, 0, 0.0], [0, 0, -1, -0.1], [1, 0, 0, -0.2], [0, 0, 0, 1]], dtype=float)
    xyz = msgs.pointcloud_xyz(msg)
    image = msgs.project_points(xyz, camera, lidar_to_camera)
    steps = [
        ("decode (pointcloud_to_numpy)", lambda: msgs.pointcloud_to_numpy(msg)),
        ("xyz of finite points", lambda: msgs.pointcloud_xyz(msg)),
        ("project (plumb_bob, nearest wins)", lambda: msgs.project_points(xyz, camera, lidar_to_camera)),
        ("total (pointcloud_to_range_image)", lambda: msgs.pointcloud_to_range_image(msg, info, lidar_to_camera)),
        ("encode (numpy_to_pointcloud)", lambda: msgs.numpy_to_pointcloud(cloud)),
    ]
    print()
    print(f"PointCloud2 of {args.points} points ({len(msg.data) / 2**20:.1f} MB) into a "
          f"{camera.width}x{camera.height} camera: {np.count_nonzero(image)} pixels hit; median of {args.repeat} runs")
    print(markdown_table(["step", "ms"], [[name, median_ms(time_call(fn, args.repeat))] for name, fn in steps]))
    print()
    _painting(args, rng, camera, lidar_to_camera)
    print()
    _compressed(args, rng)
    return 0


def _painting(args, rng, camera, lidar_to_camera) -> None:
    """outputs.points: the per-point projection (instead of the image-only one), with the occlusion test of the
    default footprint (outputs.points_occlusion_deg), and painting the cloud with the outputs (a gather over the
    projected pixels plus the record copy), per cloud size."""
    import numpy as np

    from .. import msgs
    from ..pipeline import painting
    from ..pipeline.config import defaults
    from ..reporting import markdown_table, median_ms
    from .timing import time_call

    labels = rng.integers(0, 25, (camera.height, camera.width)).astype(np.uint8)
    confidence = rng.random((camera.height, camera.width)).astype(np.float32)
    footprint = defaults()["outputs.points_occlusion_deg"]
    rows = []
    for count in args.paint_points:
        cloud = _scan(count, rng)
        xyz = msgs.cloud_xyz(cloud)
        projection = msgs.project_cloud(xyz, camera, lidar_to_camera, footprint_deg=footprint)
        painted = painting.paint(cloud, projection, labels, confidence, 25)
        rows.append([
            count, int(projection.visible.sum()),
            median_ms(time_call(lambda: msgs.project_points(xyz, camera, lidar_to_camera), args.repeat)),
            median_ms(time_call(lambda: msgs.project_cloud(xyz, camera, lidar_to_camera), args.repeat)),
            median_ms(time_call(lambda: msgs.project_cloud(xyz, camera, lidar_to_camera, footprint_deg=footprint),
                                args.repeat)),
            median_ms(time_call(lambda: painting.paint(cloud, projection, labels, confidence, 25), args.repeat)),
            median_ms(time_call(lambda: msgs.numpy_to_pointcloud(painted), args.repeat)),
        ])
    print(f"Painting LiDAR points (outputs.points) into {camera.width}x{camera.height} outputs, median of "
          f"{args.repeat} runs, ms; occlusion test with footprints of {footprint} deg")
    print(markdown_table(["points", "on a pixel", "project (image only)", "project (per point)",
                          "project + occlusion test", "paint", "encode painted cloud"], rows))


def _compressed(args, rng) -> None:
    import numpy as np

    from .. import msgs
    from ..errors import ConfigError
    from ..reporting import markdown_table, median_ms
    from .timing import time_call

    try:
        width, height = (int(v) for v in args.compressed_size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--compressed-size expects WxH, got {args.compressed_size!r}") from None
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([128 + 100 * np.sin(x / 97.0), 128 + 100 * np.cos(y / 61.0), 128 + 90 * np.sin((x + y) / 151.0)],
                     -1)
    rgb = np.clip(scene + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
    depth = (2.0 + 60.0 * (y / height) + np.sin(x / 37.0)).astype(np.float32)
    millimetres = np.round(depth * 1000).astype(np.uint16)
    cases = [
        ("JPEG rgb8 q90 (compressed)", lambda: msgs.numpy_to_compressed(rgb, "rgb8", "jpeg", quality=90)),
        ("PNG rgb8 level 1 (compressed)", lambda: msgs.numpy_to_compressed(rgb, "rgb8", "png")),
        ("compressedDepth 32FC1 png", lambda: msgs.numpy_to_compressed_depth(depth, depth_max=100.0)),
        ("compressedDepth 16UC1 png", lambda: msgs.numpy_to_compressed_depth(millimetres, "16UC1", depth_max=100.0)),
    ]
    rows = []
    for name, encode in cases:
        msg = encode()
        rows.append([name, f"{len(msg.data) / 2**20:.2f}",
                     median_ms(time_call(lambda: msgs.compressed_to_numpy(msg), args.repeat)),
                     median_ms(time_call(encode, args.repeat))])
    print(f"CompressedImage {width}x{height} (raw rgb8 {rgb.nbytes / 2**20:.1f} MB, 32FC1 {depth.nbytes / 2**20:.1f} "
          f"MB), median of {args.repeat} runs, ms; decode = compressed_to_numpy (header checks + OpenCV)")
    print(markdown_table(["transport / format", "MB on the wire", "decode", "encode"], rows))
