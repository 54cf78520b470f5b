# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create the venv on first use. Order matters: the pinned CPU/CUDA torch first, then sam2 without build
# isolation or deps (otherwise its build pulls a second, multi-GB torch), then the ROS 2 wheels and the rest.
#
# Two ROS 2 distros, each from its PyPI wheels in its own venv (their rclpy, rmw and message packages share module
# names, so they cannot live in one): Kilted (the default) in .venv, Jazzy in .venv-jazzy. `make test` runs the lint
# gate, the whole suite on Kilted, then the ROS-facing tests (pytest marker `ros`) on Jazzy; `make test
# ROS_DISTRO=jazzy` runs the whole suite on Jazzy (and nothing on Kilted). ROS_ALSO= skips the second distro.
PYTHON ?= python3
ROS_DISTRO ?= kilted
TORCH_VERSION := 2.13.0
SAM2_VERSION := 1.1.0
PYTEST_ARGS ?=

# Per distro: the venv and the ROS 2 wheels. Kilted's are named ros-*, Jazzy's ros-jazzy-* (rclpy's `fastrtps` extra
# brings rmw_fastrtps_cpp). Listed: every ROS package the code imports (rclpy, sensor_msgs, std_msgs,
# diagnostic_msgs, lifecycle_msgs, rcl_interfaces, rosgraph_msgs) plus geometry_msgs; pip resolves the rest.
VENV_kilted := .venv
ROS_WHEELS_kilted := ros-rclpy ros-rmw-fastrtps-cpp ros-sensor-msgs ros-std-msgs ros-diagnostic-msgs \
	ros-lifecycle-msgs ros-rcl-interfaces ros-rosgraph-msgs ros-geometry-msgs
VENV_jazzy := .venv-jazzy
ROS_WHEELS_jazzy := "ros-jazzy-rclpy[fastrtps]" ros-jazzy-sensor-msgs ros-jazzy-std-msgs ros-jazzy-diagnostic-msgs \
	ros-jazzy-lifecycle-msgs ros-jazzy-rcl-interfaces ros-jazzy-rosgraph-msgs ros-jazzy-geometry-msgs
DISTROS := kilted jazzy
ifeq ($(filter $(ROS_DISTRO),$(DISTROS)),)
$(error ROS_DISTRO must be one of: $(DISTROS) (got '$(ROS_DISTRO)'))
endif
# With the default distro, the ROS-facing tests run on the other one too.
ROS_ALSO ?= $(if $(filter kilted,$(ROS_DISTRO)),jazzy)

VENV := $(VENV_$(ROS_DISTRO))
PY := $(VENV)/bin/python
stamp = $(VENV_$(1))/.mmseg-installed
STAMP := $(call stamp,$(ROS_DISTRO))

.PHONY: demo test lint venv clean-venv

# One recipe for every distro's venv; only the venv folder and the ROS wheels differ.
define venv_recipe
$(call stamp,$(1)): setup.py Makefile
	test -x $(VENV_$(1))/bin/python || $(PYTHON) -m venv $(VENV_$(1))
	$(VENV_$(1))/bin/python -m pip install -q torch==$(TORCH_VERSION) numpy
	$(VENV_$(1))/bin/python -m pip install -q hydra-core iopath tqdm pillow
	SAM2_BUILD_CUDA=0 $(VENV_$(1))/bin/python -m pip install -q --no-deps --no-build-isolation sam2==$(SAM2_VERSION)
	$(VENV_$(1))/bin/python -m pip install -q $(ROS_WHEELS_$(1))
	$(VENV_$(1))/bin/python -m pip install -q opencv-python-headless numba rosbags pyyaml matplotlib \
		pytest hypothesis ruff vermin colcon-core colcon-ros
	$(VENV_$(1))/bin/python -m pip install -q --no-deps -e .
	$(VENV_$(1))/bin/python -c "import torch, sam2, rclpy, mmseg_ros; \
		assert torch.__version__.startswith('$(TORCH_VERSION)'), torch.__version__"
	touch $$@
endef
$(foreach distro,$(DISTROS),$(eval $(call venv_recipe,$(distro))))

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmseg demo

# The lint gate first: style drift (ruff.toml) fails the suite like a failing test, and so does syntax or a library
# call newer than Python 3.10 in what runs on a robot (Humble's Python; no Humble wheels exist to test on).
# vermin exits 0 on a file it cannot parse and on a file whose rules conflict, printing a line for it: any output fails
# too. `long` is excluded because vermin reads torch's `tensor.long()` as Python 2's builtin.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	out=$$($(VENV)/bin/vermin -q -t=3.10- --no-tips --violations --eval-annotations --exclude long \
		mmseg_ros launch setup.py 2>&1); rc=$$?; echo "$$out"; test $$rc = 0 && test -z "$$out"

# pytest exits 5 when it collected no test: make treats any non-zero exit as failure, so an empty run fails.
# Each pytest run picks a DDS domain of its own (test/conftest.py), so the two runs cannot hear each other.
test: lint $(foreach distro,$(ROS_ALSO),$(call stamp,$(distro)))
	$(PY) -m pytest -q $(PYTEST_ARGS)
	$(foreach distro,$(ROS_ALSO),$(VENV_$(distro))/bin/python -m pytest -q -m ros $(PYTEST_ARGS) &&) true

clean-venv:
	rm -rf $(foreach distro,$(DISTROS),$(VENV_$(distro)))

# The GPU check (scripts/gpu_check.py): CUDA tests and the model, engine and node benchmarks at fp32/bf16/fp16 on a
# machine whose own Python has torch with CUDA; tables in $OUT or out/gpu. GPU_CHECK_ARGS=--dry-run runs every step
# tiny on the CPU (e.g. make gpu-check GPU_PYTHON=.venv/bin/python GPU_CHECK_ARGS=--dry-run).
GPU_PYTHON ?= python3
GPU_CHECK_ARGS ?=
.PHONY: gpu-check
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)
