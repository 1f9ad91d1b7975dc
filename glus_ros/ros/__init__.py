"""ROS 2 layer of glus_ros: thin rclpy nodes and message conversions over the ROS-free core."""
