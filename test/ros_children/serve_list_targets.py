"""Child process for test_ros_messages: serves glus_ros_msgs/srv/ListTargets on argv[1].

Answers two known targets; exits by itself after argv[2] seconds (default 60).
"""

import sys

import rclpy
from glus_ros_msgs.msg import TargetResult
from glus_ros_msgs.srv import ListTargets
from spin import spin_for  # test/ros_children/spin.py (the script's own folder is on sys.path)


def answer(request: ListTargets.Request, response: ListTargets.Response) -> ListTargets.Response:
    """Fill the parallel arrays with two targets in different states."""
    response.target_ids = ["mug_1", "person_2"]
    response.expressions = ["the red mug", "the person waving"]
    response.states = [TargetResult.TRACKING, TargetResult.LOST]
    return response


def main() -> None:
    service = sys.argv[1]
    lifetime_s = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    rclpy.init()
    node = rclpy.create_node("glus_test_list_targets")
    node.create_service(ListTargets, service, answer)
    spin_for(node, lifetime_s)


if __name__ == "__main__":
    main()
