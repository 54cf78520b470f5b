"""`mmseg demo` with a small setting: a generated drive with two sensor drop-outs, replayed through a real tiny
MLE-SAM; the report names the windows and the pictures exist and show what they should."""
import json

import numpy as np


def test_demo_runs_and_reports_the_drop_outs(tmp_path, capsys):
    import cv2
    from PIL import Image

    from mmseg_ros import cli

    out = tmp_path / "demo"
    assert cli.main(["demo", "--seconds", "3", "--size", "96", "--card", "test_tiny_mle_sam", "--out", str(out),
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out

    report = json.loads((out / "replay" / "report.json").read_text())
    depth, camera = report["windows"]
    assert depth["modality"] == "depth" and camera["modality"] == "rgb"
    # 30 frames; depth is out for frames 7-12 and the camera for 18-23 (OUTAGES), each window holds exactly those.
    assert depth["frames"] == 6 and depth["used"]["depth"] == 0 and depth["used"]["rgb"] == 6
    assert camera["frames"] == 6 and camera["used"]["rgb"] == 0 and camera["used"]["depth"] == 6
    assert report["frames"]["processed"] == 30 and report["frames"]["scored"] == 30
    assert report["frames"]["by_anchor"] == {"rgb": 24, "depth": 6, "event": 0, "lidar": 0}
    assert report["subsets"]["R-D-E-L"]["frames"] == 18
    assert (out / "replay" / "segmented" / "metadata.yaml").is_file()

    for text in ("### Drop-out windows", "mIoU with all sensors", "while depth is out", "while rgb is out",
                 "Latency per stage", "demo_sheet.png"):
        assert text in printed, text

    sheet = cv2.imread(str(out / "demo_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 4 * 128 and sheet.shape[1] > 4 * 128
    assert sheet.std() > 20  # a picture, not a blank canvas
    gif = Image.open(out / "demo_drive.gif")
    assert gif.n_frames == 30
    gif.seek(20)  # camera out: the camera tile is the flat "camera out" panel
    tile = np.asarray(gif.convert("RGB"))[:, :96]
    assert np.median(tile) == np.median(tile[:10])
