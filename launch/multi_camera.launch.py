"""Two cameras, one tracker each: a head camera and a wrist camera, every tracker under its camera's namespace.

    ros2 launch glus_ros multi_camera.launch.py \\
        head_camera_topic:=/head/camera/color/image_raw wrist_camera_topic:=/wrist/camera/color/image_raw
    ros2 topic pub --once /head/glus/command std_msgs/msg/String "{data: 'the red mug'}"
    ros2 topic pub --once /wrist/glus/command std_msgs/msg/String "{data: 'the handle'}"
    ros2 topic echo /wrist/glus/segmentation

Each tracker is track.launch.py included with ``namespace`` set, so its topics, services and node name move
under it (``/head/tracker``, ``/head/glus/...``; ``/wrist/tracker``, ``/wrist/glus/...``); both read the same
params file (keyed ``/**/tracker``). Each tracker loads its own copy of the model (twice the memory). Add a
camera by adding a name to CAMERAS.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description import LaunchDescription  # not `from launch`: isort takes launch/ for ours
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = "glus_ros"
CAMERAS = ("head", "wrist")
SHARED = ("model", "checkpoint", "vision_tower", "adapter", "device", "dtype", "params_file")


def generate_launch_description() -> LaunchDescription:
    track = os.path.join(get_package_share_directory(PACKAGE), "launch", "track.launch.py")
    arguments = [DeclareLaunchArgument(name, default_value="", description=f"{name} of every tracker "
                                       "(default: params_file's)") for name in SHARED if name != "params_file"]
    arguments.append(DeclareLaunchArgument(
        "params_file", default_value=os.path.join(get_package_share_directory(PACKAGE), "config", "tracker.yaml"),
        description="tracker parameter file shared by the trackers"))
    includes = []
    for camera in CAMERAS:
        arguments.append(DeclareLaunchArgument(f"{camera}_camera_topic", default_value=f"/{camera}/camera/image_raw",
                                               description=f"colour image topic of the {camera} camera"))
        includes.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(track),
            launch_arguments={"namespace": camera,
                              "camera_topic": LaunchConfiguration(f"{camera}_camera_topic"),
                              **{name: LaunchConfiguration(name) for name in SHARED}}.items(),
        ))
    return LaunchDescription([*arguments, *includes])
