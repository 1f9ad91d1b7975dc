"""Launch the glus_ros tracker (a lifecycle node) and bring it up: configure, then activate when configured.

    ros2 launch glus_ros track.launch.py camera_topic:=/camera/color/image_raw use_depth:=true
    ros2 launch glus_ros track.launch.py with_camera:=true          # synthetic RGB-D camera included
    ros2 launch glus_ros track.launch.py namespace:=wrist camera_topic:=/wrist/image_raw   # one camera of several
    ros2 launch glus_ros track.launch.py model:=glus-s checkpoint:=/models/GLUS-S vision_tower:=/models/clip \\
        dtype:=bf16 device:=cuda

Parameters come from ``params_file`` (default: the package's config/tracker.yaml, keyed ``/**/tracker`` so it
applies in any namespace; config/camera_source.yaml for the camera). A launch argument left empty keeps the
params file's value; one that is given wins over it. Under ``namespace`` every topic of the tracker moves with it
(``/<namespace>/glus/segmentation``, ``/<namespace>/glus/command``, ``/<namespace>/tracker/set_targets``); the
camera topics are what ``camera_topic`` (and the params file) say. Send targets with
``ros2 topic pub --once /glus/command std_msgs/msg/String "{data: 'the red mug'}"``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_description import LaunchDescription  # not `from launch`: isort takes launch/ for ours
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = "glus_ros"
BOOL_CHOICES = ["true", "false", ""]

# launch argument -> (tracker parameter it sets, description); empty = the params file's value
TRACKER_OVERRIDES = {
    "camera_topic": ("image_topic", "colour image topic the tracker subscribes to (sensor_msgs/Image)"),
    "model": ("model", "model config name, YAML file, trained model directory or backend folder"),
    "checkpoint": ("checkpoint", "released GLUS weights folder or official checkpoint for the model"),
    "vision_tower": ("vision_tower", "released GLUS weights: local CLIP ViT-L/14 folder"),
    "adapter": ("adapter", "released GLUS weights: fine-tuning export (LoRA + heads) applied to the release"),
    "device": ("device", "cpu, cuda, cuda:N or auto"),
    "dtype": ("dtype", "fp32 or bf16"),
    "schedule": ("schedule", "live: tracker every frame, MLLM in its own worker; full: MLLM every frame; "
                             "fast: MLLM every reground_every frames"),
    "use_depth": ("use_depth", "true: subscribe depth + CameraInfo and publish 3D target points"),
    "compressed": ("compressed", "true: subscribe sensor_msgs/CompressedImage on <camera_topic>/compressed"),
    "target_frame": ("target_frame", "tf frame for the 3D target points ('' = the camera frame)"),
}
BOOL_ARGUMENTS = ("use_depth", "compressed")


def _tracker_overrides(context):
    """The given (non-empty) launch arguments as tracker parameters, booleans as booleans."""
    overrides = {}
    for argument, (parameter, _) in TRACKER_OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context).strip()
        if value:
            overrides[parameter] = value == "true" if argument in BOOL_ARGUMENTS else value
    return overrides


def _launch_setup(context, *args, **kwargs):
    config_dir = os.path.join(get_package_share_directory(PACKAGE), "config")
    camera_params = os.path.join(config_dir, "camera_source.yaml")
    namespace = LaunchConfiguration("namespace").perform(context).strip().strip("/")
    overrides = _tracker_overrides(context)

    tracker = LifecycleNode(
        package=PACKAGE,
        executable="tracker_node",
        name="tracker",
        namespace=namespace,
        output="screen",
        parameters=[LaunchConfiguration("params_file").perform(context), overrides],
    )
    camera_overrides = {"image_topic": overrides["image_topic"]} if "image_topic" in overrides else {}
    camera = Node(
        package=PACKAGE,
        executable="camera_source",
        name="camera_source",
        namespace=namespace,
        output="screen",
        parameters=[camera_params, camera_overrides],
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
    return [activate_when_configured, tracker, camera, configure]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "tracker.yaml")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the tracker (and camera) nodes and of their topics"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="tracker parameter file (node key /**/tracker)"),
        DeclareLaunchArgument("with_camera", default_value="false", choices=["true", "false"],
                              description="also start the synthetic camera_source node"),
    ]
    for argument, (_, description) in TRACKER_OVERRIDES.items():
        choices = BOOL_CHOICES if argument in BOOL_ARGUMENTS else None
        arguments.append(DeclareLaunchArgument(argument, default_value="", choices=choices,
                                               description=f"{description} (default: params_file)"))
    return LaunchDescription([*arguments, OpaqueFunction(function=_launch_setup)])
