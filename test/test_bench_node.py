"""`mmseg bench node`'s own logic without DDS: camera sizes as cameras name them, and a row's ratios and latency."""
import pytest

from mmseg_ros.bench import node
from mmseg_ros.errors import ConfigError


def test_sizes_are_square_or_width_by_height():
    assert node.image_size("1024") == (1024, 1024)
    assert node.image_size("1920x1200") == (1920, 1200) and node.size_label((1920, 1200)) == "1920x1200"
    assert node.image_size("2048X1536") == (2048, 1536)
    for bad in ("1920x", "x1200", "big", "1x2x3"):
        with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
            node.image_size(bad)


def test_row_sums_stages_and_adds_transport_wait_and_forward_to_the_latency():
    stages = {"decode": 0.001, "sync": 0.0005, "preprocess": 0.002, "postprocess": 0.003, "encode": 0.0025,
              "publish": 0.001, "encode.labels": 0.0005, "encode.confidence": 0.001, "encode.color": 0.001,
              "publish.labels": 0.0002, "publish.confidence": 0.0005, "publish.color": 0.0003,
              "forward": 0.030, "sync_wait": 0.0}
    group = [{"transport": 0.020}, {"transport": 0.020}, {"transport": 0.020}]
    timed = [(s, stages) for s in group[1:]]
    row = dict(zip(["size", "inputs", "sets", "transport", "transport p95", *node.STAGES,
                    *(f"encode.{k}" for k in node.OUTPUTS), *(f"publish.{k}" for k in node.OUTPUTS),
                    "overhead", "overhead p95", "ratio", "forward",
                    "sync wait", "latency", "latency - forward"], node._row((1920, 1200), 4, group, timed, 3)))
    assert row["size"] == "1920x1200" and row["sets"] == "3/3"
    assert row["overhead"] == pytest.approx(10.0) and row["ratio"] == pytest.approx(0.5)
    assert row["publish.confidence"] == pytest.approx(0.5)  # per output, beside (not added to) the publish stage
    assert row["latency"] == pytest.approx(20.0 + 10.0 + 30.0) and row["latency - forward"] == pytest.approx(30.0)


def test_table_caption_says_the_load_average_and_what_was_published(capsys):
    """The printed table: one line per size, and the caption names the card, the outputs the peer received and the
    load average before and after (on a shared CPU it moves every column)."""
    from types import SimpleNamespace

    from mmseg_ros.pipeline import NodeConfig

    config = NodeConfig.from_values({})
    stages = SimpleNamespace(config=config, built=node.OUTPUTS,
                             pipeline=SimpleNamespace(segmenter=SimpleNamespace(device="cpu")))
    row = ["1024x1024", 4, "3/3", *([1.0] * 21)]  # the 24 columns
    node._print_table([row], config.card, {"received": {"labels": 2}}, stages, load=(0.61, 0.74))
    out = capsys.readouterr().out
    assert "| 1024x1024 |" in out and f"Card {config.card.name}" in out and "{'labels': 2}" in out
    assert "Load average (1 min) 0.61 before / 0.74 after" in out


def test_bench_kernels_prints_ours_beside_the_library_path(capsys):
    """`mmseg bench kernels` at a small size: one row, every step timed (positive), ours and the library call each."""
    from mmseg_ros.cli import main

    assert main(["bench", "kernels", "--sizes", "192x160", "--repeat", "2", "--frames", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header, row = ([c.strip() for c in line.strip("|").split("|")] for line in (lines[0], lines[2]))
    assert row[0] == "192x160" and len(row) == len(header) == 12
    assert "area average (ours) ms" in header and "overlay (cv2 LUT + addWeighted) ms" in header
    assert "model input, all inputs (one pass) ms" in header
    assert all(float(v) > 0 for v in row[1:])


def test_live_runner_times_each_set_when_its_last_input_arrives():
    """--live: a set goes to the worker once every input of its stamp arrived; the first set of each size warms up
    (restarting the pipeline), later ones are timed; an incomplete set never runs."""
    from types import SimpleNamespace

    class Stages:
        def __init__(self):
            self.restarts, self.ran = 0, []

        def restart(self):
            self.restarts += 1

        def run(self, messages):
            self.ran.append(sorted(messages))
            return {"decode": 0.001}

    def msg(stamp_s, width):
        return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp_s, nanosec=0)), width=width,
                               height=width)

    stages = Stages()
    live = node.LiveRunner(stages, ("rgb", "depth"))
    for stamp, width in ((1, 64), (2, 64), (3, 64), (4, 32), (5, 32)):
        live.add("rgb", msg(stamp, width), stamp)
        live.add("depth", msg(stamp, width), stamp + 1)
    live.add("rgb", msg(6, 32), 6)  # its depth never comes
    live.close()
    assert stages.restarts == 2 and len(stages.ran) == 5
    assert sorted(live.results) == [2 * 10**9, 3 * 10**9, 5 * 10**9]
