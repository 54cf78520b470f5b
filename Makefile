# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv on first use. Order matters: the pinned CPU/CUDA torch first, then sam2 without build
# isolation or deps (otherwise its build pulls a second, multi-GB torch), then the ROS 2 wheels and the rest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mmseg-installed
TORCH_VERSION := 2.13.0
SAM2_VERSION := 1.1.0
ROS_WHEELS := ros-rclpy ros-rmw-fastrtps-cpp ros-sensor-msgs ros-std-msgs ros-diagnostic-msgs ros-lifecycle-msgs
PYTEST_ARGS ?=

.PHONY: demo test lint venv clean-venv

venv: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==$(TORCH_VERSION) numpy
	$(PIP) install -q hydra-core iopath tqdm pillow
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-deps --no-build-isolation sam2==$(SAM2_VERSION)
	$(PIP) install -q $(ROS_WHEELS)
	$(PIP) install -q opencv-python-headless rosbags pyyaml matplotlib pytest hypothesis ruff
	$(PIP) install -q --no-deps -e .
	$(PY) -c "import torch, sam2, rclpy, mmseg_ros; assert torch.__version__.startswith('$(TORCH_VERSION)'), torch.__version__"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmseg demo

# The lint gate (ruff.toml) first: style drift fails the suite like a failing test.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# pytest exits 5 when it collected no test: make treats any non-zero exit as failure, so an empty run fails.
test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# The GPU check (scripts/gpu_check.py): CUDA tests and the model, engine and node benchmarks at fp32/bf16/fp16 on a
# machine whose own Python has torch with CUDA; tables in $OUT or out/gpu. GPU_CHECK_ARGS=--dry-run runs every step
# tiny on the CPU (e.g. make gpu-check GPU_PYTHON=.venv/bin/python GPU_CHECK_ARGS=--dry-run).
GPU_PYTHON ?= python3
GPU_CHECK_ARGS ?=
.PHONY: gpu-check
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)
