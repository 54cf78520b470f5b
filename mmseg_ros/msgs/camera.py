"""The camera model (sensor_msgs/CameraInfo: pinhole + plumb_bob / rational_polynomial, raw or rectified, binning
and ROI). Kept apart from the codecs, as image_geometry is in ROS; projecting points into it is `projection`."""

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import polynomial as poly

from ..errors import MessageError
from .types import count_of, field_of, new_message, set_header

# --------------------------------------------------------------------------------------------------------------------
# Camera model and projection.

DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8}


@dataclass(frozen=True)
class Camera:
    """Validated pinhole intrinsics with optional plumb_bob / rational_polynomial distortion (OpenCV convention:
    pixel centres at integer coordinates)."""

    k: np.ndarray  # (3, 3)
    d: np.ndarray  # distortion coefficients (k1, k2, p1, p2, k3[, k4, k5, k6]) or empty
    distortion_model: str
    width: int
    height: int

    @property
    def distorted(self) -> bool:
        return bool(self.d.size) and bool(np.any(self.d))

    def fold_radius2(self) -> float:
        """Squared normalised radius beyond which the radial model stops growing (it folds back, mapping points far
        outside the field of view into the image); points there are dropped. inf when it never folds."""
        if not self.distorted:
            return np.inf
        k1, k2, _, _, k3, *rest = (list(self.d) + [0.0] * 8)[:8]
        num = np.array([1.0, k1, k2, k3])  # polynomials in s = r^2, lowest power first
        den = np.array([1.0, *rest[:3]]) if self.distortion_model == "rational_polynomial" else np.array([1.0])
        # d/dr [r * num(s) / den(s)] has the sign of (num + 2 s num') den - 2 s num den'.
        s = np.array([0.0, 1.0])
        growth = poly.polysub(
            poly.polymul(poly.polyadd(num, 2 * poly.polymul(s, poly.polyder(num))), den),
            2 * poly.polymul(poly.polymul(s, num), poly.polyder(den)),
        )
        roots = np.concatenate([_roots(growth), _roots(den)])
        real = roots.real[(np.abs(roots.imag) < 1e-12) & (roots.real > 0)]
        return float(real.min()) if real.size else np.inf


def _roots(coefficients: np.ndarray) -> np.ndarray:
    """Roots of a polynomial (lowest power first) whose leading coefficients negligible next to the largest (below
    1e-12 of it: a denormal k2 would otherwise overflow the companion matrix) are dropped first."""
    scale = float(np.abs(coefficients).max())
    return poly.polyroots(poly.polytrim(coefficients, tol=1e-12 * scale)) if scale > 0 else np.empty(0)


MAX_CAMERA_PIXELS = 2**26  # 8192 x 8192: beyond any camera (8K video is 7680 x 4320); a 256 MiB range image


def _floats(info, name: str) -> np.ndarray:
    values = field_of(info, name, "CameraInfo")
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise MessageError(f"CameraInfo.{name} must be a list of numbers, got {values!r}") from None


CAMERA_MODELS = ("auto", "raw", "rectified")


def camera_from_info(info, model: str = "raw") -> Camera:
    """Validate a CameraInfo into the Camera of the image it describes.

    model: 'raw' = K + D (the image as the camera delivers it), 'rectified' = P's left 3x3 without distortion (an
    image_rect from image_proc), 'auto' = raw when D has a non-zero coefficient, else rectified. Binning and ROI are
    applied as image_geometry does (the image is the ROI of the full sensor, then binned: fx' = fx / binning_x,
    cx' = (cx - x_offset) / binning_x); an ROI of a rectified image and a P with a translation column (the right
    camera of a stereo pair) are refused."""
    if model not in CAMERA_MODELS:
        raise MessageError(f"camera model must be one of {CAMERA_MODELS}, got {model!r}")
    width, height = count_of(info, "width", "CameraInfo"), count_of(info, "height", "CameraInfo")
    if width == 0 or height == 0:
        raise MessageError(f"CameraInfo has zero size: width={width}, height={height}")
    k = _intrinsics(_floats(info, "k"), "k")
    d = _floats(info, "d")
    distortion = field_of(info, "distortion_model", "CameraInfo") or ""
    if not np.isfinite(d).all():
        raise MessageError(f"CameraInfo.d must be finite, got {d.tolist()}")
    if model == "auto":
        model = "raw" if np.any(d) else "rectified"
    if model == "rectified":
        p = _floats(info, "p")
        if p.size != 12 or not np.isfinite(p).all():
            raise MessageError(f"CameraInfo.p must be 12 finite numbers, got {p.tolist()}")
        if np.any(p[[3, 7, 11]]):
            raise MessageError(f"CameraInfo.p has a translation column {p[[3, 7, 11]].tolist()} (the second camera "
                               "of a stereo pair): projecting into it is not supported")
        k, d, distortion = _intrinsics(np.delete(p, [3, 7, 11]), "p"), np.zeros(0), ""
    elif np.any(d):
        if distortion not in DISTORTION_MODELS:
            raise MessageError(f"CameraInfo.distortion_model {distortion!r} is not supported; supported: "
                               f"{', '.join(DISTORTION_MODELS)}")
        if d.size != DISTORTION_MODELS[distortion]:
            raise MessageError(f"CameraInfo.d has {d.size} coefficients, {distortion} needs "
                               f"{DISTORTION_MODELS[distortion]}: {d.tolist()}")
    k, width, height = _binned_roi(info, k.reshape(3, 3), width, height, model)
    if width * height > MAX_CAMERA_PIXELS:  # a projection allocates one float per pixel
        raise MessageError(f"CameraInfo size {width}x{height} exceeds {MAX_CAMERA_PIXELS} pixels")
    return Camera(k, d, distortion, width, height)


def _intrinsics(k: np.ndarray, name: str) -> np.ndarray:
    if k.size != 9 or not np.isfinite(k).all():
        raise MessageError(f"CameraInfo.{name} must be 9 finite numbers, got {k.tolist()}")
    if not np.any(k):
        raise MessageError(f"CameraInfo.{name} is all zero (an uncalibrated camera); cannot project")
    if k[0] <= 0 or k[4] <= 0 or k[3] != 0 or k[6] != 0 or k[7] != 0 or k[8] != 1:
        raise MessageError(
            f"CameraInfo.{name} must be [fx, s, cx, 0, fy, cy, 0, 0, 1] with fx, fy > 0, got {k.tolist()}"
        )
    return k


def _binned_roi(info, k: np.ndarray, width: int, height: int, model: str):
    """(K, width, height) of the image after the CameraInfo's ROI and binning (0 and 1 mean no binning)."""
    bx = count_of(info, "binning_x", "CameraInfo") if hasattr(info, "binning_x") else 0
    by = count_of(info, "binning_y", "CameraInfo") if hasattr(info, "binning_y") else 0
    bx, by = max(bx, 1), max(by, 1)
    roi = getattr(info, "roi", None)
    x0, y0, roi_w, roi_h = (count_of(roi, f, "CameraInfo.roi") for f in ("x_offset", "y_offset", "width", "height")) \
        if roi is not None else (0, 0, 0, 0)
    full = (x0, y0, roi_w, roi_h) in ((0, 0, 0, 0), (0, 0, width, height))
    if not full:
        if model == "rectified":
            raise MessageError(f"CameraInfo.roi {roi_w}x{roi_h}+{x0}+{y0} with the rectified model: the ROI of a "
                               "rectified image is not supported (use inputs.camera_model raw, or a full image)")
        if roi_w == 0 or roi_h == 0 or x0 + roi_w > width or y0 + roi_h > height:
            raise MessageError(f"CameraInfo.roi {roi_w}x{roi_h}+{x0}+{y0} does not fit the {width}x{height} sensor")
        width, height = roi_w, roi_h
    if bx == by == 1 and full:
        return k, width, height
    if width < bx or height < by:
        raise MessageError(f"CameraInfo binning {bx}x{by} leaves no pixel of a {width}x{height} image")
    out = k.copy()
    out[0, 0], out[0, 1], out[0, 2] = k[0, 0] / bx, k[0, 1] / bx, (k[0, 2] - x0) / bx
    out[1, 1], out[1, 2] = k[1, 1] / by, (k[1, 2] - y0) / by
    return out, width // bx, height // by


def numpy_to_camera_info(k, width: int, height: int, d=(), distortion_model: str = "plumb_bob", header=None, *,
                         ros: bool | None = None):
    """Build a CameraInfo (R identity, P = [K | 0]) and validate it like a received one."""
    msg = new_message("CameraInfo", ros)
    set_header(msg, header)
    k = np.asarray(k, dtype=np.float64).reshape(-1)
    msg.width, msg.height, msg.distortion_model = int(width), int(height), distortion_model
    msg.k = [float(v) for v in k]
    msg.d = [float(v) for v in np.asarray(d, dtype=np.float64).reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    camera_from_info(msg)
    msg.p = [*k[0:3], 0.0, *k[3:6], 0.0, *k[6:9], 0.0]
    return msg
