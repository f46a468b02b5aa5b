"""Lint as a test (ros2/examples habit): ruff with the repo's ruff.toml."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "scenemaker_ros", "tests"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_imports_no_ros():
    """The core library stays testable without ROS: no rclpy / ROS message imports outside ros/."""
    offenders = []
    for path in (REPO / "scenemaker_ros").rglob("*.py"):
        if "ros" in path.relative_to(REPO / "scenemaker_ros").parts[:-1]:
            continue
        text = path.read_text()
        for banned in ("import rclpy", "from rclpy", "_msgs", "import rosbags", "from rosbags"):
            if banned in text:
                offenders.append(f"{path.relative_to(REPO)}: {banned}")
    assert not offenders, offenders
