"""glus_ros: language-conditioned video segmentation (GLUS) for ROS 2 robots.

The core (``glus_ros.model``, ``glus_ros.sampling``, ``glus_ros.metrics``, ...) is ROS-free;
the ROS nodes are a thin layer over it.
"""

__version__ = "0.1.0"
