#!/usr/bin/env bash
# Installs everything glus_ros needs into .venv/ in the repository root (CPU machine, no ROS install):
# torch (CPU wheel, pinned, first), the ML stack, sam2 without torchvision, the ROS 2 Jazzy wheels,
# the glus_ros_msgs interfaces built from msg/, and glus_ros itself (editable, registered in the venv's
# ament index like a colcon install: ros2 launch / ros2 run find it).
# Safe to re-run: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=$ROOT/.venv

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# pip -q, minus this machine's noise about absent local index folders
mkdir -p "$ROOT/build"
pip_install() {
  local status=0
  "$VENV/bin/python" -m pip install -q "$@" >"$ROOT/build/pip.log" 2>&1 || status=$?
  grep -v "is ignored: it is neither a file nor a directory" "$ROOT/build/pip.log" || true
  return "$status"
}

step "torch 2.13.0 (CPU wheel) first: an unpinned torch would pull several GB of CUDA packages"
pip_install torch==2.13.0

step "ML stack (no torchvision: the registry's build breaks transformers on CPU)"
pip_install -r requirements.txt

step "sam2 1.1.0 without its dependencies and without the CUDA extension"
if ! $VENV/bin/python -c "import sam2" 2>/dev/null; then
  SAM2_BUILD_CUDA=0 pip_install --no-build-isolation --no-deps sam2==1.1.0
fi

step "ROS 2 Jazzy wheels (runtime, message generators, bag I/O)"
pip_install -r requirements-ros.txt

step "fixing the include paths that the message wheels' CMake exports carry from their build machine"
$VENV/bin/python scripts/fix_rosidl_exports.py "$VENV"

step "building msg/ (glus_ros_msgs) into the venv"
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH
BUILD=$ROOT/build/glus_ros_msgs
cmake -S msg -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$VENV/bin/python" >"$ROOT/build/msgs-cmake.log" 2>&1 \
  || { tail -40 "$ROOT/build/msgs-cmake.log"; exit 1; }
cmake --build "$BUILD" -j2 >>"$ROOT/build/msgs-cmake.log" 2>&1 \
  || { tail -40 "$ROOT/build/msgs-cmake.log"; exit 1; }
cmake --install "$BUILD" >>"$ROOT/build/msgs-cmake.log" 2>&1

step "glus_ros (editable) and the developer tools (ruff, pytest, colcon)"
pip_install --no-build-isolation --no-deps -e .
pip_install -r requirements-dev.txt

step "registering glus_ros in the venv's ament index (share/glus_ros, lib/glus_ros: what colcon installs)"
$VENV/bin/python scripts/ament_register.py --prefix "$VENV"

step "done: activate with 'source .venv/bin/activate'"
