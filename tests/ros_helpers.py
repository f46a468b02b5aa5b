"""ROS test helpers: skip (or, with SCENEMAKER_REQUIRE_ROS set, fail) without rclpy and the
project's messages; an rclpy context on its own domain; spinning until a condition holds."""

import importlib
import os
import random
import time

import pytest


def require_ros():
    """The scenemaker_msgs.msg module; skips or fails when ROS is not importable."""
    try:
        importlib.import_module("rclpy.serialization")
        importlib.import_module("tf2_msgs.msg")
        return importlib.import_module("scenemaker_msgs.msg")
    except ImportError as exc:
        reason = (f"rclpy/scenemaker_msgs/tf2_msgs not importable ({exc}); build them with "
                  "`bash scripts/build_msgs.sh`")
        if os.environ.get("SCENEMAKER_REQUIRE_ROS"):
            pytest.fail(f"SCENEMAKER_REQUIRE_ROS is set but {reason}")
        pytest.skip(reason)


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment for a ROS process on loopback only, on its own domain."""
    return {**os.environ, "ROS_DOMAIN_ID": str(domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}


def free_domain_id() -> int:
    return random.randint(101, 230)


def spin_until(executor, condition, timeout: float, step: float = 0.05) -> bool:
    """Spin ``executor`` until ``condition()`` is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        executor.spin_once(timeout_sec=step)
    return bool(condition())
