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
