"""CameraInfo -> Camera: K + D for raw images, P for rectified ones, binning and ROI as image_geometry applies them."""
from __future__ import annotations

import numpy as np
import pytest

from mmseg_ros import msgs
from mmseg_ros.errors import MessageError

K = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
D = [-0.2, 0.05, 0.001, -0.001, 0.0]
P = [450.0, 0.0, 330.0, 0.0, 0.0, 455.0, 235.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def info(d=D, p=P, binning=(0, 0), roi=(0, 0, 0, 0)):
    msg = msgs.numpy_to_camera_info(K, 640, 480, d=d, ros=False)
    msg.p = list(p)
    msg.binning_x, msg.binning_y = binning
    x, y, w, h = roi
    msg.roi = msgs.types.RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
    return msg


def test_raw_uses_k_and_d_rectified_uses_p_auto_follows_d():
    raw = msgs.camera_from_info(info(), "raw")
    assert np.array_equal(raw.k.ravel(), K) and raw.distorted
    rect = msgs.camera_from_info(info(), "rectified")
    assert np.array_equal(rect.k, np.array(P).reshape(3, 4)[:, :3]) and not rect.distorted
    assert msgs.camera_from_info(info(), "auto").distorted  # D non-zero: the raw image
    assert np.array_equal(msgs.camera_from_info(info(d=[0.0] * 5), "auto").k, rect.k)  # D zero: P


def test_binning_and_roi_move_the_projection_like_cropping_and_downsampling_the_image():
    points = np.array([[0.3, -0.2, 5.0], [-0.5, 0.4, 8.0], [0.0, 0.0, 3.0]])
    full = msgs.camera_from_info(info(d=[0.0] * 5), "raw")
    sub = msgs.camera_from_info(info(d=[0.0] * 5, binning=(2, 2), roi=(100, 60, 400, 300)), "raw")
    assert (sub.width, sub.height) == (200, 150)

    def pixels(camera):
        image = msgs.project_points(points, camera, np.eye(4), value="depth")
        v, u = np.nonzero(image)
        return sorted(zip(image[v, u].round(3), u, v))
    for (depth_full, u_full, v_full), (depth_sub, u_sub, v_sub) in zip(pixels(full), pixels(sub)):
        assert depth_full == depth_sub
        assert abs((u_full - 100) / 2 - u_sub) <= 1 and abs((v_full - 60) / 2 - v_sub) <= 1


@pytest.mark.parametrize("changes, model, words", [
    ({"roi": (600, 0, 100, 100)}, "raw", "does not fit"),
    ({"roi": (10, 10, 100, 100)}, "rectified", "ROI of a rectified image"),
    ({"p": P[:3] + [-45.0] + P[4:]}, "rectified", "stereo pair"),
    ({"p": [0.0] * 12}, "rectified", "all zero"),
    ({}, "fisheye", "camera model"),
])
def test_what_cannot_be_applied_is_refused(changes, model, words):
    with pytest.raises(MessageError, match=words):
        msgs.camera_from_info(info(**changes), model)


def test_real_camera_info_with_roi_and_binning():
    pytest.importorskip("sensor_msgs")
    msg = msgs.numpy_to_camera_info(K, 640, 480, d=D, ros=True)
    msg.binning_x = msg.binning_y = 4
    camera = msgs.camera_from_info(msg, "raw")
    assert (camera.width, camera.height) == (160, 120) and camera.k[0, 0] == K[0] / 4
