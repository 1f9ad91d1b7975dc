"""The ``tracker`` lifecycle node: camera images + referring expressions in, per-target results out.

A thin ROS shell over :class:`glus_ros.streaming.StreamingEngine`:

* configure: load the model, create the engine, the (lifecycle) publishers, the target services
  (``~/set_targets``, ``~/clear_targets``, ``~/list_targets``) and the command topics
  (``glus/command``: std_msgs/String, the text replaces target ``target_0``; ``glus/commands``:
  ReferringCommandArray). Targets can be set while inactive. A command's region (box or point in input-image
  pixels) makes the target "track <region>": its bounds are checked against the newest image size (a bad
  region is that command's error in SetTargets); before the first image they are checked when the target is
  first grounded, which drops a target whose region does not fit (logged by the engine). A question
  (expression ending in "?") is answered once and its answer published with every result.
* activate: subscribe the camera (colour, or colour + depth matched by message_filters where installed, else
  :mod:`glus_ros.ros.sync`, with the newest CameraInfo) and start the engine's worker. Image callbacks only
  decode and submit; the worker runs the model and publishes from its own thread, so a slow model drops
  frames (newest wins) instead of queueing them.
* deactivate (the off switch): unsubscribe and stop the worker; nothing is published while inactive. With
  ``release_on_deactivate`` the stream's history and target memories are dropped (targets stay and are
  re-grounded on activation) and a model on a GPU moves to host memory, freeing the accelerator; activate
  moves it back.
* cleanup / shutdown: drop the engine and the model and free their memory.

Outputs (all stamped with the exact header of the image they belong to; names relative, so a namespace moves
them): ``glus/segmentation`` (TargetResultArray), ``glus/mask`` (mono8 mask of the first target),
``glus/target_point`` (PointStamped of the first target with a 3D point) and ``glus/target_points/<id>`` (each
target's own) -- metres in the camera optical frame, or in ``target_frame`` through tf2; only with depth and
CameraInfo, never pixels -- ``glus/detections`` / ``glus/detections_3d`` (vision_msgs, where it imports,
:mod:`glus_ros.ros.detections`), ``glus/debug_image`` (rgb8 overlay) and ``glus/markers`` (RViz MarkerArray of
the 3D targets, :mod:`glus_ros.ros.markers`), both only built while someone subscribes. ``glus/targets``
(latched ReferringCommandArray) holds the current target set however it came. ``/diagnostics`` gets the node's
health once a second in every state (:mod:`glus_ros.ros.diagnostics`). No output carries a non-finite number.

Lifecycle requests for a transition the current state does not offer are refused (success=false, one log line)
instead of ending the process. Bad input is counted and logged per kind (:mod:`glus_ros.ros.input_errors`).

Shutdown (SIGINT, SIGTERM, the lifecycle shutdown transition) stops publishing before anything is torn down:
the worker may finish a frame after rclpy's context is gone, and that result is dropped, not published.

Why CameraInfo is not part of the synchronised set: intrinsics do not change per frame, and a missing
CameraInfo must not stop the tracker (it then publishes without 3D points and warns).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import math
import re
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from glus_ros_msgs.msg import ReferringCommandArray, TargetResultArray
from glus_ros_msgs.srv import ClearTargets, ListTargets, SetTargets
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.service import Service
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from glus_ros.recording import topics
from glus_ros.ros import bridges, detections, messages
from glus_ros.ros.diagnostics import HealthMonitor, tracker_status
from glus_ros.ros.image_conversion import (
    float_to_stamp,
    intrinsics_from_camera_info,
    mask_to_image,
    rgb_to_image,
    stamp_to_float,
)
from glus_ros.ros.input_errors import InputErrorLog
from glus_ros.ros.markers import target_markers
from glus_ros.ros.overlay import draw_result
from glus_ros.ros.qos import latched_qos, qos_profile, results_qos, sensor_qos
from glus_ros.ros.tracker_params import LIVE, PARAMETERS, applies_at, change_refusal, check_parameter
from glus_ros.streaming.types import CameraIntrinsics, FrameResult, StreamFrame, TargetSpec

__all__ = ["PARAMETERS", "TrackerNode", "check_parameter", "main"]

NODE_NAME = "tracker"
# Relative names: under a namespace (one tracker per camera, launch/multi_camera.launch.py) they move with it;
# without one they are /glus/...
SEGMENTATION_TOPIC = topics.SEGMENTATION_TOPIC.lstrip("/")
MASK_TOPIC = "glus/mask"
POINT_TOPIC = "glus/target_point"
TARGET_POINTS_PREFIX = "glus/target_points"  # + /<target id>: each target's 3D point
DEBUG_IMAGE_TOPIC = "glus/debug_image"
MARKERS_TOPIC = "glus/markers"
DETECTIONS_2D_TOPIC = "glus/detections"
DETECTIONS_3D_TOPIC = "glus/detections_3d"
TARGETS_TOPIC = topics.TARGETS_TOPIC.lstrip("/")
DIAGNOSTICS_TOPIC = "/diagnostics"
COMMAND_TOPIC = topics.COMMAND_TOPIC.lstrip("/")
COMMANDS_TOPIC = topics.COMMANDS_TOPIC.lstrip("/")
THROTTLE_S = 5.0
MAX_PENDING_HEADERS = 256
DIAGNOSTICS_PERIOD_S = 1.0
# EngineConfig fields set live
_ENGINE_LIVE = ("schedule", "reground_every", "reground_below", "max_targets", "context_refresh")


def topic_token(target_id: str) -> str:
    """A target id as topic name tokens: characters other than letters, digits, '_' and '/' become '_', and a
    token that would start with a digit gets a leading '_' (``left cup`` -> ``left_cup``, ``q/phrase_1`` stays)."""
    parts = [re.sub(r"[^A-Za-z0-9_]", "_", part) for part in target_id.split("/") if part]
    return "/".join(f"_{part}" if part[0].isdigit() else part for part in parts) or "_"


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
        # rclpy's ChangeState service raises (and the node dies) for a transition not valid in the current state
        self._handle_change_state = self._service_change_state.callback
        self._service_change_state.callback = self._on_change_state_request
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_live_parameters)
        self.engine: Any = None  # StreamingEngine while configured
        self.model: Any = None
        self._params: dict[str, Any] = {}
        self._headers: dict[int, Header] = {}
        self._headers_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._publishing = False  # outputs enabled: set after activate, cleared first on deactivate / shutdown
        self._camera_lock = threading.Lock()
        self._intrinsics: tuple[CameraIntrinsics, int, int] | None = None
        self._sync: Any = None  # colour/depth synchroniser (bridges.colour_depth_sync) while active with depth
        self._decoder = bridges.image_decoder()
        self._sync_backend = ""
        self._tf: bridges.PointTransformer | None = None
        self._offloaded_from: Any = None  # the accelerator the model was moved off at deactivate
        self._last_depth_time: float | None = None   # monotonic time of the last depth image
        self._first_image_time: float | None = None  # ... and of the first colour image since activation
        self._outputs: dict[str, Any] = {}       # lifecycle publishers by role (configure .. cleanup)
        self._target_point_pubs: dict[str, Any] = {}  # target id -> its 3D point publisher (while it has points)
        self._vision_msgs: Any = None  # vision_msgs.msg where it imports (configure .. cleanup)
        self._targets_pub: Any = None  # latched snapshot of the target set (configure .. cleanup)
        self._targets_published: tuple = ()
        self._targets_lock = threading.Lock()
        self._config_entities: list[Any] = []  # services and command subscriptions (configure .. cleanup)
        self._camera_subs: list[Any] = []  # camera subscriptions (activate .. deactivate)
        self._input_errors = InputErrorLog(THROTTLE_S)  # counts and logs (throttled per kind) rejected inputs
        self.last_error = ""  # why the last transition failed (for callers that trigger transitions themselves)
        self.results_published = 0
        self.debug_images_published = 0
        self.markers_published = 0
        self.health = HealthMonitor()
        # diagnostics in every state (also unconfigured and inactive: that is when an operator looks)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, qos_profile("reliable", 10))
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)

    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state: unconfigured, inactive, active, finalized (or a transition)."""
        return self._state_machine.current_state[1]

    def output_subscribers(self) -> dict[str, int]:
        """Subscribers per output (segmentation, mask, point, debug, markers); empty while unconfigured."""
        with self._publish_lock:
            return {role: pub.get_subscription_count() for role, pub in self._outputs.items()}

    @property
    def backends(self) -> dict[str, str]:
        """Which library converts images and pairs colour with depth ("cv_bridge" / "message_filters", or ours)."""
        return {"image_conversion": self._decoder.backend, "sync": self._sync_backend or "none (no depth)"}

    def model_state(self) -> str:
        """'not loaded', 'loaded on <device>' or 'offloaded to cpu (from <device>)'."""
        if self.model is None:
            return "not loaded"
        if self._offloaded_from is not None:
            return f"offloaded to cpu (from {self._offloaded_from})"
        return f"loaded on {self.model.device}"

    # --- lifecycle requests -------------------------------------------------------------------------
    def _on_change_state_request(self, request: ChangeState.Request,
                                 response: ChangeState.Response) -> ChangeState.Response:
        """A ChangeState request for a transition the current state does not offer is refused (success=false,
        one log line) instead of raising in rclpy's handler, which kills the node (a behaviour tree or a second
        launch can send e.g. activate while active)."""
        state = self.lifecycle_state
        available = {tid: label for tid, label, *_ in self._state_machine.available_transitions}
        wanted = request.transition.label or f"id {request.transition.id}"
        valid = (request.transition.label in available.values() if request.transition.label
                 else request.transition.id in available)
        if not valid:
            offered = ", ".join(f"{label} ({tid})" for tid, label in sorted(available.items())) or "none"
            self.get_logger().warning(
                f"refused lifecycle transition {wanted} in state {state!r} (it offers: {offered})")
            response.success = False
            return response
        try:
            return self._handle_change_state(request, response)
        except RCLError as exc:  # e.g. a state change between the check and the trigger
            self.get_logger().warning(f"refused lifecycle transition {wanted} in state {state!r}: {exc}")
            response.success = False
            return response

    # --- parameters ---------------------------------------------------------------------------------
    def _validate_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        """Refuse a bad value, and a change that could not take effect in the current state (say what to do)."""
        state = self.lifecycle_state
        for param in params:
            if param.name not in PARAMETERS:
                continue  # e.g. qos_overrides.* (read-only, declared with their publisher / subscription)
            reason = check_parameter(param.name, param.value) or change_refusal(param.name, state)
            if reason is None and param.name == "target_frame" and param.value:
                reason = self._tf_unavailable()
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_live_parameters(self, params: Sequence[Parameter]) -> None:
        """Live parameters take effect now: the engine's schedule and limits, output switches, target_frame."""
        live = {p.name: p.value for p in params if p.name in PARAMETERS and applies_at(p.name) == LIVE}
        if not live or not self._params:
            return  # unconfigured: configure reads every parameter anyway
        self._params.update(live)
        engine = self.engine
        engine_changes = {k: v for k, v in live.items() if k in _ENGINE_LIVE}
        if engine is not None and engine_changes:
            # a schedule decides which workers run: a running engine is stopped and started again around it
            restart = "schedule" in engine_changes and engine.running
            if restart:
                engine.stop()
            engine.config = dataclasses.replace(engine.config, **engine_changes)  # validated again by EngineConfig
            if restart:
                engine.start()
        if "target_frame" in live:
            self._update_tf()
        self.get_logger().info("applied " + ", ".join(f"{k}={v!r}" for k, v in live.items()))

    @staticmethod
    def _tf_unavailable() -> str | None:
        module, reason = bridges.tf_module()
        if module is not None:
            return None
        return f"target_frame needs tf2_ros, which this install cannot import ({reason}); leave it empty"

    def _read_parameters(self) -> dict[str, Any]:
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name, value in values.items():
            reason = check_parameter(name, value)
            if reason is not None:
                raise ValueError(reason)
        if values["target_frame"] and (reason := self._tf_unavailable()):
            raise ValueError(reason)
        return values

    def _update_tf(self) -> None:
        """A TransformListener exactly while target_frame is set (it subscribes /tf and /tf_static)."""
        if self._params.get("target_frame") and self._tf is None:
            module, _ = bridges.tf_module()
            if module is not None:
                self._tf = bridges.PointTransformer(module, self)
        elif not self._params.get("target_frame"):
            self._tf = None  # its subscriptions go with the listener

    # --- lifecycle ----------------------------------------------------------------------------------
    @_logged_transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from glus_ros.streaming.build import load_stream_model, make_engine
        from glus_ros.streaming.engine import EngineConfig

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
            # a GLUS model or a pointing backend (Molmo2), as the model config says; the engine follows it
            # dtype: the released weights' precision (they run in it), autocast for the other models
            self.model = load_stream_model(p["model"], p["checkpoint"] or None, p["sam2_checkpoint"] or None,
                                           p["device"], vision_tower=p["vision_tower"] or None, dtype=p["dtype"],
                                           model_override=p["model_override"] or None, adapter=p["adapter"] or None)
            self.engine = make_engine(self.model, config, on_result=self._on_result)
            loaded = time.perf_counter() - start
            self.get_logger().info(
                f"loaded model {p['model']!r} on {p['device']} in {loaded:.1f} s, warmed up in "
                f"{self._warm_up(config):.1f} s (schedule {p['schedule']}, {type(self.engine).__name__})"
            )
        except Exception as exc:  # a failed transition must say why (rclpy would swallow it silently)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed: {self.last_error}")
            self._release_model()
            return TransitionCallbackReturn.FAILURE
        self.last_error = ""
        self._decoder = bridges.image_decoder()
        self._update_tf()
        self.get_logger().info(f"image conversion: {self._decoder.backend}"
                               + (f" ({self._decoder.reason})" if self._decoder.reason else ""))
        out_qos = results_qos()
        overrides = QoSOverridingOptions.with_default_policies  # per-topic qos_overrides.<topic>.publisher.*
        outputs: list[tuple[str, type, str]] = [
            ("segmentation", TargetResultArray, SEGMENTATION_TOPIC),
            ("mask", Image, MASK_TOPIC),
            ("point", PointStamped, POINT_TOPIC),
            ("debug", Image, DEBUG_IMAGE_TOPIC),
            ("markers", MarkerArray, MARKERS_TOPIC),
        ]
        self._vision_msgs, why = bridges.vision_msgs_module()
        if self._vision_msgs is not None:
            outputs += [("detections", self._vision_msgs.Detection2DArray, DETECTIONS_2D_TOPIC),
                        ("detections_3d", self._vision_msgs.Detection3DArray, DETECTIONS_3D_TOPIC)]
        self.get_logger().info("vision_msgs detections: " + ("on" if self._vision_msgs is not None else f"off ({why})"))
        self._outputs = {
            role: self.create_lifecycle_publisher(msg_type, topic, out_qos, qos_overriding_options=overrides())
            for role, msg_type, topic in outputs
        }
        # latched: a recorder or UI that starts later still gets the current target set
        self._targets_pub = self.create_publisher(ReferringCommandArray, TARGETS_TOPIC, latched_qos())
        self._targets_published = ()
        self._publish_targets_if_changed(force=True)
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
        self.last_error = ""
        self._restore_model()
        with self._camera_lock:
            self._intrinsics = None  # possibly another camera now
        camera_qos = sensor_qos(p["qos_reliability"], p["qos_depth"])

        def subscribe(msg_type: type, topic: str, callback: Callable[[Any], None]) -> Any:
            return self.create_subscription(msg_type, topic, callback, camera_qos,
                                            qos_overriding_options=QoSOverridingOptions.with_default_policies())

        if p["compressed"]:
            image_sub = subscribe(CompressedImage, p["image_topic"].rstrip("/") + "/compressed", self._on_compressed)
        else:
            image_sub = subscribe(Image, p["image_topic"], self._on_image)
        self._camera_subs = [image_sub]
        self._sync_backend = ""
        if p["use_depth"]:
            self._sync, self._sync_backend, why = bridges.colour_depth_sync(
                ("image", "depth"), p["sync_slop_s"], p["sync_queue_size"])
            self._camera_subs += [
                subscribe(Image, p["depth_topic"], self._on_depth),
                subscribe(CameraInfo, p["camera_info_topic"], self._on_camera_info),
            ]
            self.get_logger().info(f"colour/depth sync: {self._sync_backend}" + (f" ({why})" if why else ""))
        self._last_depth_time = None
        self._first_image_time = None
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._publishing = True
        self.engine.start()
        self.get_logger().info(f"active: {image_sub.topic_name}" + (f" + {p['depth_topic']}" if p["use_depth"] else ""))
        return result

    @_logged_transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        if self.engine is not None and self._params.get("release_on_deactivate", True):
            self._release_stream_state()
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._publishing = False
        self._drop_configured_entities()
        self._release_model()
        return super().on_cleanup(state)

    @_logged_transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        self._drop_configured_entities()
        self._release_model()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in state {state.label!r}: releasing everything")
        self.on_shutdown(state)
        return TransitionCallbackReturn.SUCCESS

    def _stop_streaming(self) -> None:
        """Outputs off first (a frame in flight is dropped, not published), then the camera and the worker."""
        self._publishing = False
        self._drop_camera_subscriptions()
        if self.engine is not None:
            self.engine.stop()

    def _release_stream_state(self) -> None:
        """The off switch: forget history and target memories, and move a model on an accelerator to host memory.

        ``engine.reset`` waits for a frame still in the model (it takes the model lock), so nothing runs on the
        weights while they move. Targets stay and are grounded again after activation.
        """
        self.engine.reset()
        self.health.reset()
        device = self.model.device
        if device.type == "cpu":
            return
        import torch

        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        self.model.to("cpu")
        self._offloaded_from = device
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            after = torch.cuda.memory_allocated(device)
            self.get_logger().info(f"model moved off {device}: {(before - after) / 2**20:.0f} MiB freed "
                                   f"({after / 2**20:.0f} MiB still allocated by this process)")

    def _restore_model(self) -> None:
        if self._offloaded_from is not None and self.model is not None:
            self.model.to(self._offloaded_from)
            self.get_logger().info(f"model back on {self._offloaded_from}")
        self._offloaded_from = None

    def _warm_up(self, config: Any) -> float:
        """One throwaway frame through a scratch engine on the same model; returns seconds.

        Why: the first forward pass pays one-off costs (allocations, kernel selection; CUDA context on a
        GPU) of up to seconds, which would otherwise land on the first camera frame's latency.
        """
        from glus_ros.streaming.build import make_engine

        start = time.perf_counter()
        # inline, so that the one frame also runs the MLLM (a live engine's first frame waits for its worker)
        scratch = make_engine(self.model, dataclasses.replace(config, schedule="full"))
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
            points, self._target_point_pubs = self._target_point_pubs, {}
            for pub in points.values():
                self.destroy_publisher(pub)
        with self._targets_lock:
            if self._targets_pub is not None:
                self.destroy_publisher(self._targets_pub)
            self._targets_pub = None

    def _release_model(self) -> None:
        """Forget the engine and model and give their memory back (also GPU memory)."""
        if self.engine is not None:
            self.engine.stop()
        device_is_cuda = self.model is not None and self.model.device.type == "cuda"
        self.engine = None
        self.model = None
        self._offloaded_from = None
        self._tf = None
        with self._headers_lock:
            self._headers.clear()
        gc.collect()
        if device_is_cuda:
            import torch

            torch.cuda.empty_cache()

    # --- diagnostics (executor thread, 1 Hz) --------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        engine = self.engine
        stats = engine.stats if engine is not None else {}
        report = self.health.sample(time.monotonic(), stats)
        p = self._params or {name: self.get_parameter(name).value for name in ("model", "device")}
        sync_stats = getattr(self._sync, "stats", None)
        extra: dict[str, Any] = {
            "model": p["model"], "device": p["device"], "model_state": self.model_state(),
            "targets": len(engine.targets()) if engine is not None else 0,
            "results_published": self.results_published,
            "groundings": engine.grounding_stats["groundings"] if engine is not None else 0,  # MLLM passes so far
            "input_errors": self._input_errors.total(),
            "sync_dropped": sum(sync_stats.dropped.values()) if sync_stats is not None else None,
            "target_frame": self._params.get("target_frame") or "(camera frame)",
            **self.backends,
        }
        if self.model is not None and self.model.device.type == "cuda":
            import torch

            extra["gpu_memory_allocated_mib"] = round(torch.cuda.memory_allocated(self.model.device) / 2**20, 1)
        status = tracker_status(f"{self.get_name()}: language tracker", str(p["device"]), report,
                                self.lifecycle_state, self.last_error, extra)
        msg = DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
        self._diagnostics_pub.publish(msg)

    # --- bad input ----------------------------------------------------------------------------------
    @property
    def input_errors(self) -> Counter[str]:
        """Rejected inputs so far, by kind (image, depth, camera_info, command, tf)."""
        return self._input_errors.counts

    @property
    def last_input_error(self) -> str:
        return self._input_errors.last_text

    def _input_error(self, kind: str, text: str) -> None:
        """Count and log (throttled per kind, :mod:`glus_ros.ros.input_errors`) an input the node cannot use; the
        node keeps running."""
        line = self._input_errors.record(kind, text)
        if line is not None:
            self.get_logger().error(line)

    # --- camera input -------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        age_ms = (self.get_clock().now().nanoseconds * 1e-9 - stamp_to_float(msg.header.stamp)) * 1000.0
        self.health.record_image(time.monotonic(), age_ms)  # received: /diagnostics images_received, image_age
        try:
            rgb = self._decoder.rgb(msg)
        except ValueError as exc:
            self._input_error("image", f"dropping image on {self._params['image_topic']}: {exc}")
            return
        self._route_image(msg.header, rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        age_ms = (self.get_clock().now().nanoseconds * 1e-9 - stamp_to_float(msg.header.stamp)) * 1000.0
        self.health.record_image(time.monotonic(), age_ms)
        try:
            rgb = self._decoder.compressed_rgb(msg)
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
            depth = self._decoder.depth_metres(msg)
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
        with self._publish_lock:  # publishers are destroyed under this lock (cleanup/shutdown)
            if not (self._publishing and self._outputs and self.context.ok()):
                return  # deactivated, cleaned up or shut down while the frame was in the model
            try:
                self._publish(result, header, self._outputs)
            except Exception:
                if self._publishing and self.context.ok():
                    raise
                # rclpy shut down (SIGINT / SIGTERM) between the check above and the publish: drop the result

    def _publish(self, result: FrameResult, header: Header, pubs: dict[str, Any]) -> None:
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        pubs["segmentation"].publish(messages.frame_result_to_msg(result, header, latency_ms))
        if result.targets:
            pubs["mask"].publish(mask_to_image(result.targets[0].mask, header))
        points = self._target_points(result, header)
        first = next((p for p in points.values() if p is not None), None)
        if first is not None:
            pubs["point"].publish(first)
        self._publish_per_target_points(points)
        with self._camera_lock:
            known = self._intrinsics
        intrinsics = known[0] if known is not None else None
        if self._vision_msgs is not None:
            pubs["detections"].publish(detections.detection_2d_array(self._vision_msgs, result.targets, header))
            if any(t.point_3d is not None for t in result.targets):
                pubs["detections_3d"].publish(
                    detections.detection_3d_array(self._vision_msgs, result.targets, header, intrinsics))
        if self._params.get("publish_debug_image") and pubs["debug"].get_subscription_count() > 0:
            pubs["debug"].publish(rgb_to_image(draw_result(result), "rgb8", header))
            self.debug_images_published += 1
        if self._params.get("publish_markers") and pubs["markers"].get_subscription_count() > 0:
            pubs["markers"].publish(target_markers(result.targets, header, intrinsics))
            self.markers_published += 1
        self.results_published += 1
        self.health.record_result(time.monotonic(), latency_ms)
        self._publish_targets_if_changed()

    def _target_points(self, result: FrameResult, header: Header) -> dict[str, PointStamped | None]:
        """Each target's 3D point (metres) by target id, None where it has none this frame: in the camera optical
        frame, or with target_frame transformed by tf (a failed lookup gives None). Without depth every value is
        None: pixels never go on a 3D topic."""
        target_frame = self._params.get("target_frame")
        tf = self._tf
        points: dict[str, PointStamped | None] = {}
        for target in result.targets:
            point = messages.target_point_msg(target, header)
            if point is not None and target_frame:
                point = self._transformed(point, target_frame) if tf is not None else None
            points[target.target_id] = point
        return points

    def _transformed(self, point: PointStamped, target_frame: str) -> PointStamped | None:
        try:
            x, y, z = self._tf.transform((point.point.x, point.point.y, point.point.z), point.header.frame_id,
                                         target_frame, point.header.stamp)
        except LookupError as exc:
            self._input_error("tf", str(exc))
            return None
        if not all(math.isfinite(v) for v in (x, y, z)):
            return None
        return PointStamped(header=Header(stamp=point.header.stamp, frame_id=target_frame),
                            point=Point(x=x, y=y, z=z))

    def _publish_per_target_points(self, points: dict[str, PointStamped | None]) -> None:
        """``glus/target_points/<id>``: a PointStamped publisher per target, made at its first 3D point and
        dropped when the target is gone (called under the publish lock)."""
        for target_id in [t for t in self._target_point_pubs if t not in points]:
            self.destroy_publisher(self._target_point_pubs.pop(target_id))
        for target_id, point in points.items():
            if point is None:
                continue
            pub = self._target_point_pubs.get(target_id)
            if pub is None:
                topic = f"{TARGET_POINTS_PREFIX}/{topic_token(target_id)}"
                pub = self._target_point_pubs[target_id] = self.create_publisher(PointStamped, topic, results_qos())
            pub.publish(point)

    def _publish_targets_if_changed(self, force: bool = False) -> None:
        """Publish the target set on the latched ``glus/targets`` when it differs from the last one published
        (called after every command and every result, so targets from any source are covered)."""
        engine = self.engine
        specs = [spec for spec, _ in engine.targets()] if engine is not None else []
        key = tuple((s.target_id, s.expression, s.mode, s.region) for s in specs)
        with self._targets_lock:
            if self._targets_pub is None or (key == self._targets_published and not force):
                return
            self._targets_published = key
            header = Header(stamp=self.get_clock().now().to_msg())
            try:
                self._targets_pub.publish(messages.targets_snapshot_msg(specs, header))
            except Exception:
                if self.context.ok():
                    raise  # rclpy shutting down: nothing to publish to

    def apply_text_command(self, text: str) -> str:
        """Set target ``target_0`` to ``text`` as ``glus/command`` does (``glus-ros track --expression``); the
        target set is published on ``glus/targets``. A bad expression raises ValueError."""
        if self.engine is None:
            raise ValueError("the tracker is not configured")
        target_id = messages.apply_text_command(self.engine, text)
        self._publish_targets_if_changed()
        return target_id

    # --- commands -----------------------------------------------------------------------------------
    def _on_text_command(self, msg: String) -> None:
        if self.engine is None:
            return
        try:
            target_id = messages.apply_text_command(self.engine, msg.data)
        except ValueError as exc:
            self._input_error("command", f"ignored {COMMAND_TOPIC} {msg.data!r}: {exc}")
            return
        self._publish_targets_if_changed()
        self.get_logger().info(f"{target_id} <- {msg.data.strip()!r}")

    def _apply(self, commands: Sequence[Any], source: str) -> messages.CommandOutcome:
        outcome = messages.apply_commands(self.engine, commands)
        self._publish_targets_if_changed()
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
        self._publish_targets_if_changed()
        response.success = True
        return response

    def _list_targets(self, request: ListTargets.Request, response: ListTargets.Response) -> ListTargets.Response:
        targets = self.engine.targets() if self.engine is not None else []
        response.target_ids = [spec.target_id for spec, _ in targets]
        response.expressions = [spec.expression for spec, _ in targets]
        response.states = [messages.state_code(state) for _, state in targets]
        return response


def main(args: list[str] | None = None) -> int:
    """Console script ``tracker_node``: the node alone, waiting for lifecycle transitions (e.g. from launch).

    SIGINT and SIGTERM end it with status 0: rclpy's handlers shut the context down, the spin returns, the
    worker is stopped (a result it still finishes is dropped) and the node is destroyed.
    """
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
        node._stop_streaming()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
