"""Child process for test_bag_targets: plays a tracker session on the tracker's real topic names.

argv: mode ("snapshots" or "results"), frames, lifetime [s]. Publishes small rgb8 images on
/camera/image_raw and, for each, a TargetResultArray on /glus/segmentation (one target "t1" whose
expression is "the red cup" for the first half of the frames and "the blue box" after). In "snapshots"
mode it also publishes the target set on /glus/targets (reliable, transient local, depth 1) as the
tracker does: once before anything subscribes (a recorder must get it latched), again at the change.
The images start once /camera/image_raw has a subscriber; every publisher waits for its acknowledgements
before the child exits. Pixel and mask values are written out again, independently, in the test.
"""

import sys
import time

import rclpy
from glus_ros_msgs.msg import ReferringCommand, ReferringCommandArray, TargetResult, TargetResultArray
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

H, W = 24, 32


def snapshot(stamp, expression: str) -> ReferringCommandArray:
    msg = ReferringCommandArray(
        commands=[ReferringCommand(action=ReferringCommand.ADD, target_id="t1", expression=expression)]
    )
    msg.header.stamp = stamp
    return msg


def main() -> None:
    mode, frames, lifetime_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rclpy.init()
    node = rclpy.create_node("glus_test_session")
    reliable = QoSProfile(depth=frames + 5, reliability=ReliabilityPolicy.RELIABLE)
    images = node.create_publisher(Image, "/camera/image_raw", reliable)
    results = node.create_publisher(TargetResultArray, "/glus/segmentation", reliable)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    targets = node.create_publisher(ReferringCommandArray, "/glus/targets", latched) if mode == "snapshots" else None
    expression = "the red cup"
    if targets is not None:
        targets.publish(snapshot(node.get_clock().now().to_msg(), expression))
    deadline = time.monotonic() + lifetime_s
    while images.get_subscription_count() < 1 or results.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            sys.exit("no subscriber")
        time.sleep(0.05)
    time.sleep(0.5)  # let the recorder's subscriptions match every publisher of this node
    for i in range(frames):
        if i == frames // 2:
            expression = "the blue box"
            if targets is not None:
                targets.publish(snapshot(node.get_clock().now().to_msg(), expression))
                time.sleep(0.01)  # the change is stamped before the next image
        stamp = node.get_clock().now().to_msg()
        image = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=bytes([(i * 7) % 256]) * (H * W * 3))
        image.header.stamp = stamp
        result = TargetResult(target_id="t1", expression=expression, state=TargetResult.TRACKING, score=0.9)
        result.header = image.header
        mask = bytearray(H * W)
        for y in range(H):
            for x in range(i % W, min(W, i % W + 4)):
                mask[y * W + x] = 255
        result.mask = Image(height=H, width=W, encoding="mono8", step=W, data=bytes(mask))
        result.mask.header = image.header
        images.publish(image)
        results.publish(TargetResultArray(header=image.header, results=[result]))
        time.sleep(0.05)
    for pub in (images, results, targets):
        if pub is not None:
            pub.wait_for_all_acked(Duration(seconds=10.0))
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
