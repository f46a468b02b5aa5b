"""Start the SceneMaker node in a full ROS 2 install (launch and launch_ros have no pip wheels;
in the pip-only set-up run ``scenemaker_node --ros-args --params-file config/scenemaker.yaml``).

    ros2 launch scenemaker_ros scenemaker.launch.py \
        image:=/camera/color/image_raw depth:=/camera/aligned_depth_to_color/image_raw \
        camera_info:=/camera/color/camera_info params_file:=/path/to/scenemaker.yaml
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("scenemaker_ros"), "config",
                                  "scenemaker.yaml")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS 2 parameters file (scenemaker config show --ros)"),
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw"),
        DeclareLaunchArgument("depth", default_value="/camera/aligned_depth_to_color/image_raw"),
        DeclareLaunchArgument("camera_info", default_value="/camera/color/camera_info"),
        DeclareLaunchArgument("namespace", default_value=""),
    ]
    node = Node(
        package="scenemaker_ros", executable="scenemaker_node", name="scenemaker",
        namespace=LaunchConfiguration("namespace"), output="screen",
        parameters=[LaunchConfiguration("params_file")],
        remappings=[("image", LaunchConfiguration("image")),
                    ("depth", LaunchConfiguration("depth")),
                    ("camera_info", LaunchConfiguration("camera_info"))])
    return LaunchDescription([*arguments, node])
