"""The ROS 2 edge of scenemaker_ros: the node, message conversions, parameters, bag replay.

The only package that imports rclpy; the core library never imports it.
"""
