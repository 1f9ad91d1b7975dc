"""The ``tracker`` lifecycle node: camera images + referring expressions in, per-target results out.

A thin ROS shell over :class:`glus_ros.streaming.StreamingEngine`:

* configure: load the model, create the engine, the (lifecycle) publishers, the target services
  (``~/set_targets``, ``~/clear_targets``, ``~/list_targets``) and the command topics
  (``/glus/command``: std_msgs/String, the text replaces target ``target_0``; ``/glus/commands``:
  ReferringCommandArray). Targets can be set while inactive. A command's region (box or point in input-image
  pixels) makes the target "track <region>": its bounds are checked against the newest image size (a bad
  region is that command's error in SetTargets); before the first image they are checked when the target is
  first grounded, which drops a target whose region does not fit (logged by the engine). A question
  (expression ending in "?") is answered once and its answer published with every result.
* activate: subscribe the camera (colour, or colour + depth matched by :mod:`glus_ros.ros.sync`, with
  the newest CameraInfo) and start the engine's worker. Image callbacks only decode and submit; the
  worker runs the model and publishes from its own thread, so a slow model drops frames (newest wins)
  instead of queueing them.
* deactivate: unsubscribe and stop the worker; nothing is published while inactive.
* cleanup / shutdown: drop the engine and the model and free their memory.

Outputs (all stamped with the exact header of the image they belong to):
``/glus/segmentation`` (TargetResultArray), ``/glus/mask`` (mono8 mask of the first target),
``/glus/target_point`` (PointStamped of the first target with a point: the 3D point in metres in the
camera optical frame when depth and CameraInfo are available, otherwise the 2D pixel (x, y) with z = 0),
``/glus/debug_image`` (rgb8 overlay, only drawn while someone subscribes).

Why CameraInfo is not part of the synchronised set: intrinsics do not change per frame, and a missing
CameraInfo must not stop the tracker (it then publishes without 3D points and warns).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PointStamped
from glus_ros_msgs.msg import ReferringCommandArray, TargetResultArray
from glus_ros_msgs.srv import ClearTargets, ListTargets, SetTargets
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.service import Service
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String

from glus_ros.model.config import DEFAULT_MODEL
from glus_ros.ros import messages
from glus_ros.ros.image_conversion import (
    compressed_to_rgb,
    depth_to_metres,
    float_to_stamp,
    image_to_rgb,
    intrinsics_from_camera_info,
    mask_to_image,
    rgb_to_image,
    stamp_to_float,
)
from glus_ros.ros.overlay import draw_result
from glus_ros.ros.qos import RELIABILITY, qos_profile, results_qos, sensor_qos
from glus_ros.ros.sync import ApproximateTimeSync
from glus_ros.streaming.types import CameraIntrinsics, FrameResult, StreamFrame, TargetSpec

NODE_NAME = "tracker"
SEGMENTATION_TOPIC = "/glus/segmentation"
MASK_TOPIC = "/glus/mask"
POINT_TOPIC = "/glus/target_point"
DEBUG_IMAGE_TOPIC = "/glus/debug_image"
COMMAND_TOPIC = "/glus/command"
COMMANDS_TOPIC = "/glus/commands"
THROTTLE_S = 5.0
MAX_PENDING_HEADERS = 256

# name -> (default, description). Types follow the defaults (float parameters need a decimal point in YAML).
PARAMETERS: dict[str, tuple[Any, str]] = {
    "model": (DEFAULT_MODEL, "model config name, YAML file or trained model directory"),
    "checkpoint": ("", "official GLUS/LISA checkpoint to load ('' = none)"),
    "sam2_checkpoint": ("", "official SAM 2 .pt checkpoint for the SAM 2 head ('' = none)"),
    "device": ("cpu", "cpu, cuda, cuda:N or auto"),
    "dtype": ("fp32", "fp32 or bf16 (autocast)"),
    "schedule": ("fast", "full: MLLM re-grounds every frame (paper); fast: every reground_every frames; live: the "
                 "tracker on every frame, the MLLM in its own worker"),
    "reground_every": (8, "fast: frames between MLLM re-groundings; live: the most frames a prompt ages"),
    "reground_below": (0.5, "fast, live: re-ground a target whose score fell below this"),
    "context_refresh": (1, "frames a choice of context frames is kept (> 1: the MLLM reuses their cached prefix)"),
    "cpu_threads": (0, "torch intra-op threads for the process (0: torch's default)"),
    "history": (64, "frames kept for context sampling"),
    "max_targets": (8, "most targets tracked at once"),
    "image_topic": ("/camera/image_raw", "colour image topic (sensor_msgs/Image)"),
    "compressed": (False, "subscribe sensor_msgs/CompressedImage on <image_topic>/compressed instead"),
    "use_depth": (False, "also subscribe depth + CameraInfo and publish 3D target points"),
    "depth_topic": ("/camera/depth/image_raw", "depth image registered to the colour image (16UC1 mm or 32FC1 m)"),
    "camera_info_topic": ("/camera/camera_info", "CameraInfo of the colour camera (intrinsics for 3D points)"),
    "sync_slop_s": (0.05, "largest colour/depth stamp difference still matched [s]"),
    "sync_queue_size": (10, "colour/depth messages buffered per input while matching"),
    "depth_timeout_s": (1.0, "with use_depth: track without depth when none arrived for this long [s]"),
    "qos_reliability": ("best_effort", "camera subscription reliability: best_effort or reliable"),
    "qos_depth": (5, "camera subscription history depth"),
    "publish_debug_image": (True, "publish the rgb8 overlay on /glus/debug_image (drawn only with subscribers)"),
}
_CHOICES = {"schedule": ("fast", "full", "live"), "dtype": ("fp32", "bf16"), "qos_reliability": tuple(RELIABILITY)}
_POSITIVE_INTS = ("reground_every", "history", "max_targets", "qos_depth", "sync_queue_size", "context_refresh")


def check_parameter(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    if name in _CHOICES and value not in _CHOICES[name]:
        return f"{name} must be one of {', '.join(_CHOICES[name])}, got {value!r}"
    if name in _POSITIVE_INTS and value < 1:
        return f"{name} must be >= 1, got {value}"
    if name == "cpu_threads" and value < 0:
        return f"cpu_threads must be >= 0 (0: torch's default), got {value}"
    if name == "reground_below" and not 0.0 <= value <= 1.0:
        return f"reground_below must be in [0, 1], got {value}"
    if name in ("sync_slop_s", "depth_timeout_s") and not value >= 0.0:
        return f"{name} must be >= 0, got {value}"
    if name in ("model", "image_topic") and not str(value).strip():
        return f"{name} must not be empty"
    return None


def _logged_transition(
    method: Callable[[TrackerNode, LifecycleState], TransitionCallbackReturn],
) -> Callable[[TrackerNode, LifecycleState], TransitionCallbackReturn]:
    """Log an exception in a transition callback with its traceback (rclpy turns it into ERROR silently)."""

    @functools.wraps(method)
    def wrapper(self: TrackerNode, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return method(self, state)
        except Exception as exc:
            self.last_error = f"{method.__name__} failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"{method.__name__} failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR

    return wrapper


class TrackerNode(LifecycleNode):
    """Language-referred segmentation and tracking as a managed (lifecycle) node; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.engine: Any = None  # StreamingEngine while configured
        self.model: Any = None
        self._params: dict[str, Any] = {}
        self._headers: dict[int, Header] = {}
        self._headers_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._camera_lock = threading.Lock()
        self._intrinsics: tuple[CameraIntrinsics, int, int] | None = None
        self._sync: ApproximateTimeSync | None = None
        self._last_depth_time: float | None = None   # monotonic time of the last depth image
        self._first_image_time: float | None = None  # ... and of the first colour image since activation
        self._outputs: dict[str, Any] = {}       # lifecycle publishers by role (configure .. cleanup)
        self._config_entities: list[Any] = []  # services and command subscriptions (configure .. cleanup)
        self._camera_subs: list[Any] = []  # camera subscriptions (activate .. deactivate)
        self.input_errors: Counter[str] = Counter()  # kind -> count of rejected inputs (for monitoring/tests)
        self.last_input_error = ""
        self.last_error = ""  # why the last transition failed (for callers that trigger transitions themselves)
        self.results_published = 0
        self.debug_images_published = 0

    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state: unconfigured, inactive, active, finalized (or a transition)."""
        return self._state_machine.current_state[1]

    def output_subscribers(self) -> dict[str, int]:
        """Subscribers per output (segmentation, mask, point, debug); empty while unconfigured."""
        with self._publish_lock:
            return {role: pub.get_subscription_count() for role, pub in self._outputs.items()}

    # --- parameters ---------------------------------------------------------------------------------
    def _validate_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name in PARAMETERS:
                reason = check_parameter(param.name, param.value)
                if reason is not None:
                    return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _read_parameters(self) -> dict[str, Any]:
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name, value in values.items():
            reason = check_parameter(name, value)
            if reason is not None:
                raise ValueError(reason)
        return values

    # --- lifecycle ----------------------------------------------------------------------------------
    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from glus_ros.inference import load_model
        from glus_ros.streaming.engine import EngineConfig, StreamingEngine

        try:
            p = self._params = self._read_parameters()
            config = EngineConfig(
                schedule=p["schedule"],
                reground_every=p["reground_every"],
                reground_below=p["reground_below"],
                history=p["history"],
                max_targets=p["max_targets"],
                dtype=p["dtype"],
                context_refresh=p["context_refresh"],
                cpu_threads=p["cpu_threads"],
            )
            start = time.perf_counter()
            self.model = load_model(p["model"], p["checkpoint"] or None, p["sam2_checkpoint"] or None, p["device"])
            self.engine = StreamingEngine(self.model, config, on_result=self._on_result)
            loaded = time.perf_counter() - start
            self.get_logger().info(
                f"loaded model {p['model']!r} on {p['device']} in {loaded:.1f} s, warmed up in "
                f"{self._warm_up(StreamingEngine, config):.1f} s (schedule {p['schedule']})"
            )
        except Exception as exc:  # a failed transition must say why (rclpy would swallow it silently)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed: {self.last_error}")
            self._release_model()
            return TransitionCallbackReturn.FAILURE
        out_qos = results_qos()
        self._outputs = {
            "segmentation": self.create_lifecycle_publisher(TargetResultArray, SEGMENTATION_TOPIC, out_qos),
            "mask": self.create_lifecycle_publisher(Image, MASK_TOPIC, out_qos),
            "point": self.create_lifecycle_publisher(PointStamped, POINT_TOPIC, out_qos),
            "debug": self.create_lifecycle_publisher(Image, DEBUG_IMAGE_TOPIC, out_qos),
        }
        command_qos = qos_profile("reliable", 10)
        self._config_entities = [
            self.create_service(SetTargets, "~/set_targets", self._set_targets),
            self.create_service(ClearTargets, "~/clear_targets", self._clear_targets),
            self.create_service(ListTargets, "~/list_targets", self._list_targets),
            self.create_subscription(String, COMMAND_TOPIC, self._on_text_command, command_qos),
            self.create_subscription(ReferringCommandArray, COMMANDS_TOPIC, self._on_commands, command_qos),
        ]
        return super().on_configure(state)

    @_logged_transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:  # topics, QoS and sync settings may have changed since configure
            p = self._params = self._read_parameters()
        except ValueError as exc:
            self.last_error = str(exc)
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        with self._camera_lock:
            self._intrinsics = None  # possibly another camera now
        camera_qos = sensor_qos(p["qos_reliability"], p["qos_depth"])
        if p["compressed"]:
            image_sub = self.create_subscription(
                CompressedImage, p["image_topic"].rstrip("/") + "/compressed", self._on_compressed, camera_qos
            )
        else:
            image_sub = self.create_subscription(Image, p["image_topic"], self._on_image, camera_qos)
        self._camera_subs = [image_sub]
        if p["use_depth"]:
            self._sync = ApproximateTimeSync(("image", "depth"), p["sync_slop_s"], p["sync_queue_size"])
            self._camera_subs += [
                self.create_subscription(Image, p["depth_topic"], self._on_depth, camera_qos),
                self.create_subscription(CameraInfo, p["camera_info_topic"], self._on_camera_info, camera_qos),
            ]
        self._last_depth_time = None
        self._first_image_time = None
        result = super().on_activate(state)  # enables the lifecycle publishers
        self.engine.start()
        self.get_logger().info(f"active: {image_sub.topic_name}" + (f" + {p['depth_topic']}" if p["use_depth"] else ""))
        return result

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_camera_subscriptions()
        if self.engine is not None:
            self.engine.stop()
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_configured_entities()
        self._release_model()
        return super().on_cleanup(state)

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_camera_subscriptions()
        if self.engine is not None:
            self.engine.stop()
        self._drop_configured_entities()
        self._release_model()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in state {state.label!r}: releasing everything")
        self.on_shutdown(state)
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self, engine_type: type, config: Any) -> float:
        """One throwaway frame through a scratch engine on the same model; returns seconds.

        Why: the first forward pass pays one-off costs (allocations, kernel selection; CUDA context on a
        GPU) of up to seconds, which would otherwise land on the first camera frame's latency.
        """
        start = time.perf_counter()
        # inline, so that the one frame also runs the MLLM (a live engine's first frame waits for its worker)
        scratch = engine_type(self.model, dataclasses.replace(config, schedule="full"))
        scratch.add_target(TargetSpec("warm_up", "the object"))
        scratch.process(StreamFrame(np.zeros((64, 64, 3), np.uint8), 0.0))
        return time.perf_counter() - start

    def _drop_camera_subscriptions(self) -> None:
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        self._camera_subs = []
        self._sync = None

    def _drop_configured_entities(self) -> None:
        for entity in self._config_entities:
            if isinstance(entity, Service):
                self.destroy_service(entity)
            else:
                self.destroy_subscription(entity)
        self._config_entities = []
        with self._publish_lock:
            outputs, self._outputs = self._outputs, {}
            for pub in outputs.values():
                self.destroy_lifecycle_publisher(pub)

    def _release_model(self) -> None:
        """Forget the engine and model and give their memory back (also GPU memory)."""
        if self.engine is not None:
            self.engine.stop()
        device_is_cuda = self.model is not None and self.model.device.type == "cuda"
        self.engine = None
        self.model = None
        with self._headers_lock:
            self._headers.clear()
        gc.collect()
        if device_is_cuda:
            import torch

            torch.cuda.empty_cache()

    # --- bad input ----------------------------------------------------------------------------------
    def _input_error(self, kind: str, text: str) -> None:
        """Count and log (throttled per kind) an input the node cannot use; the node keeps running."""
        self.input_errors[kind] += 1
        self.last_input_error = text
        self.get_logger().error(f"{text} [{self.input_errors[kind]} so far]", throttle_duration_sec=THROTTLE_S)

    # --- camera input -------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except ValueError as exc:
            self._input_error("image", f"dropping image on {self._params['image_topic']}: {exc}")
            return
        self._route_image(msg.header, rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        try:
            rgb = compressed_to_rgb(msg)
        except ValueError as exc:
            self._input_error("image", f"dropping compressed image: {exc}")
            return
        self._route_image(msg.header, rgb)

    def _route_image(self, header: Header, rgb: np.ndarray) -> None:
        sync = self._sync
        if sync is None:
            self._submit(header, rgb, None)
            return
        now = time.monotonic()
        if self._first_image_time is None:
            self._first_image_time = now
        last_depth = self._last_depth_time
        waited = now - (last_depth if last_depth is not None else self._first_image_time)
        if waited > self._params["depth_timeout_s"]:
            self.get_logger().warning(
                f"no depth on {self._params['depth_topic']} for {waited:.1f} s: tracking without 3D points",
                throttle_duration_sec=THROTTLE_S,
            )
            self._submit(header, rgb, None)
            return
        for match in sync.push("image", stamp_to_float(header.stamp), (header, rgb)):
            image_header, image = match.item("image")
            self._submit(image_header, image, match.item("depth"))

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = depth_to_metres(msg)
        except ValueError as exc:
            self._input_error("depth", f"dropping depth image on {self._params['depth_topic']}: {exc}")
            return
        self._last_depth_time = time.monotonic()
        sync = self._sync
        if sync is None:
            return
        for match in sync.push("depth", stamp_to_float(msg.header.stamp), depth):
            image_header, image = match.item("image")
            self._submit(image_header, image, match.item("depth"))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            fx, fy, cx, cy = intrinsics_from_camera_info(msg)
        except ValueError as exc:
            self._input_error("camera_info", f"ignoring CameraInfo on {self._params['camera_info_topic']}: {exc}")
            return
        with self._camera_lock:
            self._intrinsics = (CameraIntrinsics(fx, fy, cx, cy), int(msg.width), int(msg.height))

    def _intrinsics_for(self, width: int, height: int) -> CameraIntrinsics | None:
        with self._camera_lock:
            known = self._intrinsics
        if known is None:
            first = self._first_image_time
            if first is None or time.monotonic() - first < self._params["depth_timeout_s"]:
                return None  # CameraInfo usually arrives just after the first images: no warning yet
            self.get_logger().warning(
                f"no CameraInfo on {self._params['camera_info_topic']} yet: publishing without 3D points",
                throttle_duration_sec=THROTTLE_S,
            )
            return None
        intrinsics, info_w, info_h = known
        if (info_w, info_h) not in ((width, height), (0, 0)):
            self._input_error(
                "camera_info",
                f"CameraInfo is for {info_w}x{info_h} but images are {width}x{height}: publishing without 3D points",
            )
            return None
        return intrinsics

    def _submit(self, header: Header, rgb: np.ndarray, depth: np.ndarray | None) -> None:
        engine = self.engine
        if engine is None:
            return
        height, width = rgb.shape[:2]
        intrinsics = None
        if depth is not None and depth.shape != (height, width):
            self._input_error(
                "depth",
                f"depth is {depth.shape[1]}x{depth.shape[0]} but the image is {width}x{height}"
                ": register depth to the colour image; publishing without 3D points",
            )
            depth = None
        if depth is not None:
            intrinsics = self._intrinsics_for(width, height)
        frame = StreamFrame(
            image=rgb, stamp=stamp_to_float(header.stamp), frame_id=header.frame_id, depth=depth, intrinsics=intrinsics
        )
        try:
            with self._headers_lock:  # the worker looks the header up under this lock: insert before it can
                engine.submit(frame)
                self._headers[frame.seq] = header
                while len(self._headers) > MAX_PENDING_HEADERS:
                    del self._headers[next(iter(self._headers))]
        except ValueError as exc:
            self._input_error("image", f"dropping frame: {exc}")

    # --- results (engine worker thread) -------------------------------------------------------------
    def _on_result(self, result: FrameResult) -> None:
        with self._headers_lock:
            header = self._headers.pop(result.seq, None)
            for seq in [s for s in self._headers if s < result.seq]:  # frames the engine dropped
                del self._headers[seq]
        if header is None:
            header = Header(stamp=float_to_stamp(result.stamp), frame_id=result.frame_id)
        points = (messages.target_point_msg(t, header) for t in result.targets)
        point = next((p for p in points if p is not None), None)
        with self._publish_lock:  # publishers are destroyed under this lock (cleanup/shutdown)
            pubs = self._outputs
            if not pubs:
                return  # cleaned up meanwhile
            stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
            latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
            pubs["segmentation"].publish(messages.frame_result_to_msg(result, header, latency_ms))
            if result.targets:
                pubs["mask"].publish(mask_to_image(result.targets[0].mask, header))
            if point is not None:
                pubs["point"].publish(point)
            if self._params.get("publish_debug_image") and pubs["debug"].get_subscription_count() > 0:
                pubs["debug"].publish(rgb_to_image(draw_result(result), "rgb8", header))
                self.debug_images_published += 1
            self.results_published += 1

    # --- commands -----------------------------------------------------------------------------------
    def _on_text_command(self, msg: String) -> None:
        if self.engine is None:
            return
        try:
            target_id = messages.apply_text_command(self.engine, msg.data)
        except ValueError as exc:
            self._input_error("command", f"ignored {COMMAND_TOPIC} {msg.data!r}: {exc}")
            return
        self.get_logger().info(f"{target_id} <- {msg.data.strip()!r}")

    def _apply(self, commands: Sequence[Any], source: str) -> messages.CommandOutcome:
        outcome = messages.apply_commands(self.engine, commands)
        for warning in outcome.warnings:
            self.get_logger().warning(f"{source}: {warning}")
        if not outcome.success:
            self._input_error("command", f"{source}: {outcome.message}")
        return outcome

    def _on_commands(self, msg: ReferringCommandArray) -> None:
        if self.engine is not None:
            self._apply(msg.commands, COMMANDS_TOPIC)

    def _set_targets(self, request: SetTargets.Request, response: SetTargets.Response) -> SetTargets.Response:
        if self.engine is None:
            response.success, response.message = False, "the tracker is not configured"
            return response
        outcome = self._apply(request.commands, "set_targets")
        response.success, response.message, response.target_ids = outcome.success, outcome.message, outcome.target_ids
        return response

    def _clear_targets(self, request: ClearTargets.Request, response: ClearTargets.Response) -> ClearTargets.Response:
        if self.engine is None:
            response.success, response.message = False, "the tracker is not configured"
            return response
        self.engine.clear_targets()
        response.success = True
        return response

    def _list_targets(self, request: ListTargets.Request, response: ListTargets.Response) -> ListTargets.Response:
        targets = self.engine.targets() if self.engine is not None else []
        response.target_ids = [spec.target_id for spec, _ in targets]
        response.expressions = [spec.expression for spec, _ in targets]
        response.states = [messages.state_code(state) for _, state in targets]
        return response


def main(args: list[str] | None = None) -> int:
    """Console script ``tracker_node``: the node alone, waiting for lifecycle transitions (e.g. from launch)."""
    import sys

    from glus_ros.ros_env import apply_ros_environment

    apply_ros_environment()
    rclpy.init(args=sys.argv if args is None else args)
    node = TrackerNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.engine is not None:
            node.engine.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
