"""Which targets (id + expression) were active when, read from a bag's messages (ROS-free).

Why: a bag holds what the tracker was told in up to three forms, and convert-bag needs one timeline:

- ``snapshots`` — ReferringCommandArray on /glus/targets: the tracker's whole target set after each
  change (one ADD per target, empty = none), latched, so a recorder started late still has it. A
  snapshot applies to the images whose header stamp is at or after its own header stamp.
- ``commands`` — String on /glus/command and ReferringCommand(Array) on /glus/commands, applied in
  bag (receive) time order, as the tracker node applies them.
- ``results`` — the target_id and expression every TargetResult carries: the set answered for an image
  applies from that image's stamp on (bags recorded before the targets topic existed).

Snapshots win over commands (they already include every command, service call and parameter), commands
over results.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

STRING_TYPE = "std_msgs/msg/String"
COMMAND_TYPE = "glus_ros_msgs/msg/ReferringCommand"
COMMAND_ARRAY_TYPE = "glus_ros_msgs/msg/ReferringCommandArray"
COMMAND_TYPES = (STRING_TYPE, COMMAND_TYPE, COMMAND_ARRAY_TYPE)
RESULT_TYPE = "glus_ros_msgs/msg/TargetResult"
RESULT_ARRAY_TYPE = "glus_ros_msgs/msg/TargetResultArray"
RESULT_TYPES = (RESULT_TYPE, RESULT_ARRAY_TYPE)
TEXT_TARGET_ID = "target_0"  # the target a String command sets (glus_ros.ros.messages.apply_text_command)
ADD, REPLACE, REMOVE, CLEAR = 0, 1, 2, 3  # ReferringCommand actions
NS = 1_000_000_000


@dataclass(frozen=True)
class Target:
    """One referred object: its id from the command (empty for String commands) and its expression."""

    target_id: str
    expression: str


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * NS + int(header.stamp.nanosec)


def apply_command(active: list[Target], msgtype: str, msg: Any) -> list[Target]:
    """The target list after one command message (a new list; order = order of addition)."""
    if msgtype == STRING_TYPE:
        text = str(msg.data).strip()
        others = [t for t in active if t.target_id != TEXT_TARGET_ID]
        return [*others, Target(TEXT_TARGET_ID, text)] if text else others
    commands = msg.commands if msgtype == COMMAND_ARRAY_TYPE else [msg]
    targets = list(active)
    for cmd in commands:
        action, tid, text = int(cmd.action), str(cmd.target_id), str(cmd.expression).strip()
        if action == CLEAR:
            targets = []
        elif action == REMOVE:
            targets = [t for t in targets if t.target_id != tid]
        elif action in (ADD, REPLACE) and text:
            key = tid or text  # an ADD without id: the tracker names it; match its results by expression
            targets = [t for t in targets if (t.target_id or t.expression) != key]
            targets.append(Target(tid, text))
    return targets


def results_targets(msgtype: str, msg: Any) -> tuple[int, list[Target]]:
    """(image stamp, targets answered) of one TargetResult(Array); results without expression are skipped."""
    results = msg.results if msgtype == RESULT_ARRAY_TYPE else [msg]
    targets: list[Target] = []
    for result in results:
        target = Target(str(result.target_id), str(result.expression).strip())
        if target.expression and target not in targets:
            targets.append(target)
    stamps = [stamp_ns(r.header) for r in results if int(r.header.stamp.sec)]
    return (stamps[0] if stamps else stamp_ns(msg.header)), targets


@dataclass
class TargetTimeline:
    """Target sets over time: change points ``(time, targets)``, sorted by time.

    ``by_stamp``: times are header stamps, compared with each image's header stamp (snapshots, results);
    otherwise bag receive times, compared with each image's bag time (commands, one expression).
    """

    source: str  # "expression", "snapshots", "commands" or "results"
    topics: list[str]
    by_stamp: bool
    changes: list[tuple[int, list[Target]]] = field(default_factory=list)
    messages: int = 0

    def __post_init__(self) -> None:
        self.changes.sort(key=lambda change: change[0])  # stable: same time keeps message order
        self._times = [t for t, _ in self.changes]

    def at(self, bag_ns: int, image_stamp_ns: int) -> tuple[int, list[Target]]:
        """(index of the change in force, its targets) for an image; (-1, []) before the first change."""
        index = bisect_right(self._times, image_stamp_ns if self.by_stamp else bag_ns) - 1
        return (index, self.changes[index][1]) if index >= 0 else (-1, [])


class TimelineBuilder:
    """Collects the three kinds of target messages from one pass over a bag, then picks the best one."""

    def __init__(self, targets_topic: str | None, command_topics: list[str], results_topic: str | None) -> None:
        self.targets_topic = targets_topic
        self.command_topics = command_topics
        self.results_topic = results_topic
        self.snapshots: list[tuple[int, list[Target]]] = []
        self.commands: list[tuple[int, list[Target]]] = []
        self.results: list[tuple[int, list[Target]]] = []
        self.result_messages = 0
        self._active: list[Target] = []

    def add(self, topic: str, msgtype: str, bag_ns: int, msg: Any) -> None:
        """Take one message of any of the topics (others are ignored)."""
        if topic == self.targets_topic:
            self.snapshots.append((stamp_ns(msg.header) or bag_ns, apply_command([], msgtype, msg)))
        elif topic in self.command_topics:
            self._active = apply_command(self._active, msgtype, msg)
            self.commands.append((bag_ns, self._active))
        elif topic == self.results_topic:
            self.result_messages += 1
            stamp, targets = results_targets(msgtype, msg)
            self.results.append((stamp or bag_ns, targets))  # an empty set ends the targets before it

    def timeline(self) -> TargetTimeline | None:
        """Snapshots if the bag has any, else commands, else the results' expressions; None if none."""
        if self.snapshots and self.targets_topic:
            return TargetTimeline("snapshots", [self.targets_topic], True, list(self.snapshots), len(self.snapshots))
        if self.commands:
            return TargetTimeline("commands", list(self.command_topics), False, list(self.commands), len(self.commands))
        if any(targets for _, targets in self.results) and self.results_topic:
            return TargetTimeline("results", [self.results_topic], True, _changes_only(self.results), len(self.results))
        return None


def _changes_only(sets: list[tuple[int, list[Target]]]) -> list[tuple[int, list[Target]]]:
    """Per-image target sets (in stamp order) reduced to the points where the set changes."""
    changes: list[tuple[int, list[Target]]] = []
    for stamp, targets in sorted(sets, key=lambda item: item[0]):
        if not changes or set(changes[-1][1]) != set(targets):
            changes.append((stamp, targets))
    return changes
