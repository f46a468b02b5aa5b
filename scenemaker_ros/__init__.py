"""scenemaker_ros: SceneMaker scene generation (perception, de-occlusion, geometry, pose) for ROS 2.

The core library in this package imports no ROS module; ROS code lives in ``scenemaker_ros.ros``.
"""

from scenemaker_ros.errors import SceneMakerError

__version__ = "0.1.0"
__all__ = ["SceneMakerError", "__version__"]
