#!/usr/bin/env bash
# Set up (idempotent) and run the whole default test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
export SCENEMAKER_REQUIRE_ROS=1  # the ROS tests fail instead of skipping when messages are missing
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}
exec .venv/bin/python -m pytest "$@"
