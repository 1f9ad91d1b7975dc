"""Shared set-up for tests that start rclpy, in this process or in child processes.

Why: every rclpy process here must use the shared-memory-only DDS profile and localhost discovery
(see glus_ros.ros_env), logs must not go to ~/.ros, and parallel test runs must not see each other's
topics: each pytest process gets its own ROS_DOMAIN_ID.

Use in a test module (import rclpy inside tests, after the ``ros_test_env`` fixture ran)::

    from helpers_ros import RosTestEnv, rclpy_context, ros_session, spin_until

    @pytest.fixture(scope="session")
    def ros_test_env(tmp_path_factory) -> RosTestEnv:
        return ros_session(tmp_path_factory)

    def test_x(ros_test_env):
        import rclpy
        with rclpy_context() as context, ros_test_env.child("my_child.py", "/topic") as child:
            node = rclpy.create_node("n", context=context)       # child script in test/ros_children/
            ...
            assert spin_until(executor, lambda: bool(received), 20.0, child), child.describe()
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from glus_ros.ros_env import apply_ros_environment, ros_environment

# One domain per pytest process: parallel runs on this machine stay apart.
DOMAIN_ID = 100 + os.getpid() % 100
CHILDREN_DIR = Path(__file__).parent / "ros_children"


@dataclass(frozen=True)
class RosTestEnv:
    """What a ROS test needs to know: the domain it runs in and where ROS logs go."""

    domain_id: int
    log_dir: Path

    def child_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process that starts rclpy in the same domain as this process."""
        env = ros_environment(log_dir=str(self.log_dir))
        env["ROS_DOMAIN_ID"] = str(self.domain_id)
        # The children import glus_ros from the source tree even without an installed glus_ros.
        repo_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def child(self, script: str, *args: str) -> RosChild:
        """A not-yet-started child running test/ros_children/``script`` in this environment."""
        return RosChild(script, args, self.child_env(), self.log_dir)

    def process(self, argv: Sequence[str], extra_env: dict[str, str] | None = None) -> RosChild:
        """A not-yet-started child running the command ``argv`` (e.g. an installed executable) in this environment."""
        return RosChild(Path(argv[0]).name, argv[1:], self.child_env(extra_env), self.log_dir, program=argv[0])


_session: RosTestEnv | None = None


def prepare_this_process(log_dir: Path) -> RosTestEnv:
    """Set this process's environment for rclpy (forced profile, domain, log dir); call before rclpy.init.

    Idempotent: the first call of a process fixes the log dir (Fast DDS reads its profile once anyway).
    """
    global _session
    if _session is None:
        log_dir.mkdir(parents=True, exist_ok=True)
        _session = RosTestEnv(domain_id=DOMAIN_ID, log_dir=log_dir)
    apply_ros_environment(force=True, log_dir=str(_session.log_dir))
    os.environ["ROS_DOMAIN_ID"] = str(_session.domain_id)
    return _session


def ros_session(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    """Body of a session-scoped ``ros_test_env`` fixture: one ROS env and log dir per pytest process."""
    if _session is not None:
        return prepare_this_process(_session.log_dir)
    return prepare_this_process(tmp_path_factory.mktemp("ros_log"))


@contextlib.contextmanager
def rclpy_context() -> Iterator[Any]:
    """A fresh rclpy Context, shut down on exit (nodes made on it die with it). Needs the env set first."""
    if _session is None:
        raise RuntimeError("call ros_session()/prepare_this_process() before starting rclpy")
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


class RosChild:
    """A child Python process running a script from test/ros_children/; always ended on exit.

    Its stderr goes to a file so that a failing test can show why the child failed.
    """

    def __init__(self, script: str, args: Sequence[str], env: dict[str, str], log_dir: Path,
                 program: str | None = None) -> None:
        self.script = CHILDREN_DIR / script
        # a script of test/ros_children/ run by this interpreter, or ``program`` itself (an executable)
        self.argv = [str(program)] if program is not None else [sys.executable, str(self.script)]
        self.args = [str(a) for a in args]
        self.env = env
        self.stderr_path = log_dir / f"{self.script.stem}-{time.monotonic_ns()}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RosChild:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*self.argv, *self.args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"child {self.script.name} not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)

    def signal_and_wait(self, sig: int, timeout_s: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status (killed after ``timeout_s``: AssertionError)."""
        if self.proc is None:
            raise RuntimeError(f"child {self.script.name} not started")
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)
            raise AssertionError(f"{self.script.name} did not exit within {timeout_s} s of signal {sig}; "
                                 f"{self.describe()}") from None

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def describe(self) -> str:
        """For assertion messages: exit status and the tail of stderr."""
        status = "running" if self.alive() else f"exited with {self.proc.returncode if self.proc else None}"
        return f"child {self.script.name} {status}; stderr tail:\n{self.stderr_text()[-2000:]}"


def installed_executable(name: str) -> Path:
    """The venv's ``lib/glus_ros/<name>`` (what ``ros2 launch`` / ``ros2 run`` start; registered by
    scripts/install.sh through scripts/ament_register.py)."""
    executable = Path(sys.prefix) / "lib" / "glus_ros" / name
    assert executable.is_file(), f"{executable} is missing: run scripts/install.sh (scripts/ament_register.py)"
    return executable


def spin_until(
    executor: Any, done: Callable[[], bool], timeout_s: float, child: RosChild | None = None
) -> bool:
    """Spin ``executor`` until ``done()`` or ``timeout_s``; stop early if ``child`` died. Returns done()."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        if child is not None and not child.alive():
            break
        executor.spin_once(timeout_sec=0.05)
    return done()


def call_idempotent(
    executor: Any, client: Any, request: Any, timeout_s: float, child: RosChild | None = None, retry_s: float = 2.0
) -> Any:
    """Call a query service, re-sending the request every ``retry_s`` until one answer arrives.

    ``service_is_ready`` only says the request path has matched; the server's reply writer may not yet
    have matched this client's reply reader, and Fast DDS then drops the answer ("failed to send
    response (timeout)"). Re-sending is safe only for services without side effects. Returns the
    response, or None on timeout.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        future = client.call_async(request)
        if spin_until(executor, future.done, min(retry_s, deadline - time.monotonic()), child):
            return future.result()
        client.remove_pending_request(future)
        if child is not None and not child.alive():
            break
    return None


def udp_ports(pid: int) -> set[int]:
    """Local ports of the UDP sockets (IPv4 and IPv6) held by process ``pid`` (Linux /proc)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def spdp_multicast_port(domain_id: int) -> int:
    """The RTPS well-known discovery multicast port (PB + DG * domain + d0 = 7400 + 250 * domain)."""
    return 7400 + 250 * domain_id


def lifecycle_state(executor: Any, probe: Any, node: str, timeout_s: float, child: RosChild | None = None) -> str:
    """The label of lifecycle node ``node``'s current state ('' when it never answered), via ``<node>/get_state``."""
    from lifecycle_msgs.srv import GetState

    client = probe.create_client(GetState, f"{node}/get_state")
    try:
        if not spin_until(executor, client.service_is_ready, timeout_s, child):
            return ""
        reply = call_idempotent(executor, client, GetState.Request(), timeout_s, child)
        return "" if reply is None else reply.current_state.label
    finally:
        probe.destroy_client(client)


def lifecycle_transition(executor: Any, probe: Any, node: str, transition: int, goal: str, timeout_s: float,
                         child: RosChild | None = None) -> bool:
    """Drive ``node`` through ``transition`` (a lifecycle_msgs/Transition id) over its ``change_state`` service.

    ChangeState is not idempotent, so a request whose answer was lost (see call_idempotent) is only sent again
    when ``get_state`` shows it never arrived. Returns whether the node reached state ``goal``.
    """
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = probe.create_client(ChangeState, f"{node}/change_state")
    deadline = time.monotonic() + timeout_s
    try:
        if not spin_until(executor, client.service_is_ready, timeout_s, child):
            return False
        before = lifecycle_state(executor, probe, node, timeout_s, child)
        while time.monotonic() < deadline:
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
            if spin_until(executor, future.done, min(5.0, deadline - time.monotonic()), child):
                return lifecycle_state(executor, probe, node, timeout_s, child) == goal
            client.remove_pending_request(future)
            state = lifecycle_state(executor, probe, node, max(1.0, deadline - time.monotonic()), child)
            if state != before:  # it arrived; the transition may still have been running
                return state == goal
            if child is not None and not child.alive():
                return False
        return False
    finally:
        probe.destroy_client(client)
