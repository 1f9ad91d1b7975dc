"""Bags: recording ROS topics (recorder, needs rclpy) and turning bags into training data (ROS-free)."""
