"""Child process for test_ros_messages: publishes one known TargetResultArray at 20 Hz on argv[1].

It exits by itself after argv[2] seconds (default 60) so that a crashed test leaves nothing behind.
The expected values are written out again, independently, in test_ros_messages.py.
"""

import sys
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Point
from glus_ros_msgs.msg import GroundedPhrase, TargetResult, TargetResultArray
from rclpy.qos import QoSProfile, ReliabilityPolicy


def build_message() -> TargetResultArray:
    """A message that sets every field to a value distinguishable from its default."""
    height, width = 48, 64
    ys, xs = np.mgrid[0:height, 0:width]
    mask = np.where((xs // 8 + ys // 8) % 2 == 1, 255, 0).astype(np.uint8)
    mask[47, 63] = 7  # one odd pixel, to catch a flipped or truncated buffer

    result = TargetResult()
    result.header.stamp.sec = 1700000000
    result.header.stamp.nanosec = 123456789
    result.header.frame_id = "camera_color_optical_frame"
    result.target_id = "mug_1"
    result.expression = "the red mug left of the laptop"
    result.mask.header = result.header
    result.mask.height = height
    result.mask.width = width
    result.mask.encoding = "mono8"
    result.mask.is_bigendian = 0
    result.mask.step = width
    result.mask.data = mask.tobytes()
    result.bbox.x_min, result.bbox.y_min, result.bbox.x_max, result.bbox.y_max = 8, 0, 63, 47
    result.points_2d = [Point(x=31.5, y=20.25, z=0.0)]
    result.has_point_3d = True
    result.point_3d = Point(x=0.125, y=-0.5, z=1.75)
    result.score = 0.875
    result.state = TargetResult.TRACKING
    result.answer = "The red mug is on the left."
    result.phrases = [GroundedPhrase(text="The red mug", start=0, end=11, target_id="mug_1")]

    msg = TargetResultArray()
    msg.header = result.header
    msg.results = [result]
    msg.latency_ms = 12.5
    msg.frames_dropped = 3
    return msg


def main() -> None:
    topic = sys.argv[1]
    lifetime_s = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    rclpy.init()
    node = rclpy.create_node("glus_test_publisher")
    pub = node.create_publisher(
        TargetResultArray, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    )
    msg = build_message()
    deadline = time.monotonic() + lifetime_s
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            try:
                pub.publish(msg)
            except Exception:
                if rclpy.ok():
                    raise
                break  # SIGTERM shut rclpy down between the check and publish(): a normal end
            time.sleep(0.05)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
