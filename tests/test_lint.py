"""Lint as a test (ros2/examples habit): ruff with the repo's ruff.toml."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# an import of rclpy, rosbags or any ROS message package (``*_msgs``), however indented
ROS_IMPORT = re.compile(r"^\s*(from|import)\s+(rclpy|rosbags|\w+_msgs)\b")


def test_ruff_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "scenemaker_ros", "tests",
                             "launch"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_imports_no_ros():
    """The core library stays testable without ROS: no rclpy / ROS message imports outside ros/."""
    offenders = []
    for path in (REPO / "scenemaker_ros").rglob("*.py"):
        if "ros" in path.relative_to(REPO / "scenemaker_ros").parts[:-1]:
            continue
        for line in path.read_text().splitlines():
            if ROS_IMPORT.match(line):
                offenders.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert not offenders, offenders
