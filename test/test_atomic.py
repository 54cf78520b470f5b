import os
import stat

import pytest

from mmseg_ros.atomic import atomic_open, atomic_path


def test_complete_file_appears_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with atomic_open(target) as f:
        f.write(b"payload")
    assert target.read_bytes() == b"payload"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_failure_keeps_previous_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, suffix=".txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_open_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x", "rb"):
            pass
