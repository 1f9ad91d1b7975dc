"""Launch the glus_ros tracker (a lifecycle node) and bring it up: configure, then activate when configured.

    ros2 launch glus_ros track.launch.py camera_topic:=/camera/color/image_raw use_depth:=true
    ros2 launch glus_ros track.launch.py with_camera:=true          # synthetic RGB-D camera included

Parameters come from the package's config/tracker.yaml (and config/camera_source.yaml for the camera);
launch arguments override the most common ones. Send targets with
``ros2 topic pub --once /glus/command std_msgs/msg/String "{data: 'the red mug'}"``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_description import LaunchDescription  # not `from launch`: isort takes launch/ for ours
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

PACKAGE = "glus_ros"


def generate_launch_description() -> LaunchDescription:
    config_dir = os.path.join(get_package_share_directory(PACKAGE), "config")
    tracker_params = os.path.join(config_dir, "tracker.yaml")
    camera_params = os.path.join(config_dir, "camera_source.yaml")

    arguments = [
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="colour image topic the tracker subscribes to (sensor_msgs/Image)"),
        DeclareLaunchArgument("model", default_value="glus-tiny-synth",
                              description="model config name, YAML file or trained model directory"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda, cuda:N or auto"),
        DeclareLaunchArgument("schedule", default_value="live", choices=["live", "fast", "full"],
                              description="live: tracker every frame, MLLM in its own worker; full: MLLM "
                                          "every frame; fast: MLLM every reground_every frames"),
        DeclareLaunchArgument("use_depth", default_value="false", choices=["true", "false"],
                              description="subscribe depth + CameraInfo and publish 3D target points"),
        DeclareLaunchArgument("with_camera", default_value="false", choices=["true", "false"],
                              description="also start the synthetic camera_source node"),
    ]

    tracker = LifecycleNode(
        package=PACKAGE,
        executable="tracker_node",
        name="tracker",
        namespace="",
        output="screen",
        parameters=[
            tracker_params,
            {
                "image_topic": LaunchConfiguration("camera_topic"),
                "model": LaunchConfiguration("model"),
                "device": LaunchConfiguration("device"),
                "schedule": LaunchConfiguration("schedule"),
                "use_depth": ParameterValue(LaunchConfiguration("use_depth"), value_type=bool),
            },
        ],
    )
    camera = Node(
        package=PACKAGE,
        executable="camera_source",
        name="camera_source",
        namespace="",
        output="screen",
        parameters=[camera_params, {"image_topic": LaunchConfiguration("camera_topic")}],
        condition=IfCondition(LaunchConfiguration("with_camera")),
    )

    configure = EmitEvent(event=ChangeState(
        lifecycle_node_matcher=matches_action(tracker),
        transition_id=Transition.TRANSITION_CONFIGURE,
    ))
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=tracker,
        start_state="configuring",
        goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(tracker),
            transition_id=Transition.TRANSITION_ACTIVATE,
        ))],
    ))

    return LaunchDescription([*arguments, activate_when_configured, tracker, camera, configure])
