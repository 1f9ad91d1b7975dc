#!/usr/bin/env bash
# The project's test command: lint, then the whole pytest suite (CPU, ~minutes).
# Every process that starts rclpy inherits the shipped shared-memory-only DDS profile and
# localhost-only discovery: no DDS traffic leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$ROOT/.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "no $VENV: run 'bash scripts/install.sh' first" >&2
  exit 2
fi
export FASTRTPS_DEFAULT_PROFILES_FILE=$ROOT/config/fastdds_shm.xml
export FASTDDS_DEFAULT_PROFILES_FILE=$ROOT/config/fastdds_shm.xml
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export AMENT_PREFIX_PATH=$VENV
ROS_LOG_DIR=$(mktemp -d -t glus_ros_log.XXXXXX)
export ROS_LOG_DIR
export PYTHONDONTWRITEBYTECODE=1
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m pytest -q -p no:cacheprovider test "$@"
