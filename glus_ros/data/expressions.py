"""Referring expressions for a synthetic scene, built from what the generator knows and checked to be exact.

An expression is a :class:`Description` (a noun phrase plus at most one qualifier: a motion, a position or
a relation to another object) rendered through one of a few templates. :func:`resolve` says which
objects a description picks out under fixed semantics; an expression is kept only when that set is
exactly the set it is written for (one object for singular wording, two or more for plural), so every
expression is unambiguous by construction. The same machinery answers counting questions later:
``len(resolve(Description(NounPhrase("red", "circle")), facts))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glus_ros.data.grounding import SynthCaption, SynthQuestion
from glus_ros.data.motion import motion_tags, runs
from glus_ros.data.scene import COLOURS, Scene, SceneObject
from glus_ros.data.shapes import SHAPES

KINDS: tuple[str, ...] = ("attribute", "motion", "position", "relation", "multi")
# "left": clearly leftmost of its kind in every frame; "end:left": where it ends up, in the last frame
POSITIONS: tuple[str, ...] = (
    "left", "right", "top", "bottom", "end:left", "end:right", "end:top", "end:bottom",
)
RELATIONS: tuple[str, ...] = ("near", "far")
SIZE_RATIO = 1.3  # "big" / "small" only when the radius differs this much from every alternative
RELATION_RATIO = 1.5  # "near" / "far" only when the mean distance differs this much
_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}

# (singular templates, plural templates); {np} / {nps} is the noun phrase
_MOTION_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dir": (
        ("the {np} that moves {d}", "the {np} moving {d}", "the {np} going {d}"),
        ("the {nps} that move {d}", "the {nps} moving {d}", "the {nps} going {d}"),
    ),
    "still": (
        ("the {np} that does not move", "the {np} staying still"),
        ("the {nps} that do not move", "the {nps} staying still"),
    ),
    "start": (
        ("the {np} that starts moving", "the {np} that begins to move"),
        ("the {nps} that start moving", "the {nps} that begin to move"),
    ),
    "stop": (
        ("the {np} that stops", "the {np} that stops moving", "the {np} moving then stopping"),
        ("the {nps} that stop", "the {nps} that stop moving"),
    ),
    "turn": (
        ("the {np} moving {a} then {b}", "the {np} that goes {a} and then {b}"),
        ("the {nps} moving {a} then {b}", "the {nps} that go {a} and then {b}"),
    ),
    "enter": (
        ("the {np} that comes in", "the {np} entering the scene", "the {np} that enters"),
        ("the {nps} that come in", "the {nps} entering the scene"),
    ),
    "leave": (
        ("the {np} that leaves", "the {np} leaving the scene", "the {np} that goes out"),
        ("the {nps} that leave", "the {nps} leaving the scene"),
    ),
}
_POSITION_WORDS = {
    "left": ("on the left", "leftmost"),
    "right": ("on the right", "rightmost"),
    "top": ("at the top", "topmost"),
    "bottom": ("at the bottom", "lowest"),
}
_RELATION_TEMPLATES = {
    "near": ("the {np} next to the {ref}", "the {np} near the {ref}", "the {np} closest to the {ref}"),
    "far": ("the {np} far from the {ref}", "the {np} farthest from the {ref}"),
}


@dataclass(frozen=True)
class NounPhrase:
    """Colour and/or shape; ``size`` ("big"/"small") picks the biggest/smallest of those that match."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None

    def text(self, plural: bool = False, variant: int = 0) -> str:
        """Words of the phrase; ``variant`` chooses among synonyms ("red one" / "red object")."""
        words = [w for w in (self.size, self.colour) if w]
        if self.shape:
            return " ".join([*words, self.shape + ("s" if plural else "")])
        noun = ("objects", "ones")[variant % 2] if plural else ("one", "object")[variant % 2]
        return " ".join([*words, noun])


@dataclass(frozen=True)
class Description:
    """A noun phrase plus at most one qualifier (motion tag, position, or relation to ``ref``)."""

    noun: NounPhrase
    motion: str | None = None
    position: str | None = None
    relation: str | None = None
    ref: NounPhrase | None = None

    def kind(self, plural: bool) -> str:
        if plural:
            return "multi"
        if self.relation:
            return "relation"
        if self.position:
            return "position"
        if self.motion:
            return "motion"
        return "attribute"

    def superlative(self) -> bool:
        """Whether it singles out one object by comparison (so it has no plural reading)."""
        return bool(self.noun.size or self.position or self.relation)


@dataclass(frozen=True)
class SynthExpression:
    """One generated expression: its words, its objects, and what it hinges on."""

    text: str
    obj_ids: tuple[int, ...]
    kind: str  # one of KINDS
    motion: str | None  # the motion tag it relies on, if any
    tags: tuple[str, ...]  # facts it states: colour:, shape:, size:, motion:, position:, relation:, ref:
    event: tuple[int, int]  # half-open frame range where the telling event happens


@dataclass(frozen=True, eq=False)
class SceneFacts:
    """Per-object facts that descriptions are checked against, computed once per scene."""

    scene: Scene
    inside: dict[int, list[bool]]
    motions: dict[int, dict[str, tuple[int, int]]]

    @classmethod
    def of(cls, scene: Scene) -> SceneFacts:
        inside = {o.obj_id: o.inside(scene.width, scene.height) for o in scene.objects}
        motions = {o.obj_id: motion_tags(o.steps, inside[o.obj_id]) for o in scene.objects}
        return cls(scene=scene, inside=inside, motions=motions)


def _noun_matches(noun: NounPhrase, facts: SceneFacts) -> list[SceneObject]:
    base = [
        o for o in facts.scene.objects
        if (noun.colour is None or o.colour == noun.colour) and (noun.shape is None or o.shape == noun.shape)
    ]
    if noun.size is None:
        return base
    if len(base) < 2:
        return []
    ordered = sorted(base, key=lambda o: o.radius, reverse=noun.size == "big")
    best, runner_up = ordered[0], ordered[1]
    ratio = best.radius / runner_up.radius if noun.size == "big" else runner_up.radius / best.radius
    return [best] if ratio >= SIZE_RATIO else []


def _extreme_frames(cands: list[SceneObject], where: str, facts: SceneFacts) -> list[int | None]:
    """Per frame, the obj_id that is clearly the most ``where`` of ``cands`` (None when no clear one)."""
    axis, sign = {"left": (0, 1.0), "right": (0, -1.0), "top": (1, 1.0), "bottom": (1, -1.0)}[where]
    out: list[int | None] = []
    for t in range(facts.scene.frames):
        if not all(facts.inside[o.obj_id][t] for o in cands):
            out.append(None)
            continue
        ordered = sorted(cands, key=lambda o: sign * o.centres[t, axis])
        best, runner_up = ordered[0], ordered[1]
        gap = sign * (runner_up.centres[t, axis] - best.centres[t, axis])
        out.append(best.obj_id if gap >= max(best.reach, runner_up.reach) else None)
    return out


def _by_position(cands: list[SceneObject], position: str, facts: SceneFacts) -> list[SceneObject]:
    if len(cands) < 2:
        return []
    at_end = position.startswith("end:")
    winners = _extreme_frames(cands, position.removeprefix("end:"), facts)
    winner = winners[-1]
    if winner is None or (not at_end and any(w != winner for w in winners)):
        return []
    return [o for o in cands if o.obj_id == winner]


def _mean_distance(a: SceneObject, b: SceneObject, facts: SceneFacts) -> float | None:
    both = np.array(facts.inside[a.obj_id]) & np.array(facts.inside[b.obj_id])
    if not both.any():
        return None
    return float(np.linalg.norm(a.centres[both] - b.centres[both], axis=1).mean())


def _by_relation(cands: list[SceneObject], desc: Description, facts: SceneFacts) -> list[SceneObject]:
    refs = _noun_matches(desc.ref, facts) if desc.ref is not None else []
    if len(refs) != 1:
        return []
    ref = refs[0]
    cands = [o for o in cands if o.obj_id != ref.obj_id]
    if len(cands) < 2:
        return []
    dists = [_mean_distance(o, ref, facts) for o in cands]
    if any(d is None for d in dists):
        return []
    order = sorted(range(len(cands)), key=lambda i: dists[i], reverse=desc.relation == "far")
    best, runner_up = dists[order[0]], dists[order[1]]
    ok = best * RELATION_RATIO <= runner_up if desc.relation == "near" else best >= RELATION_RATIO * runner_up
    return [cands[order[0]]] if ok else []


def resolve(desc: Description, facts: SceneFacts) -> frozenset[int]:
    """The obj_ids the description picks out (empty when it picks none or no clear one)."""
    cands = _noun_matches(desc.noun, facts)
    if desc.motion is not None:
        cands = [o for o in cands if desc.motion in facts.motions[o.obj_id]]
    if desc.position is not None:
        cands = _by_position(cands, desc.position, facts)
    if desc.relation is not None:
        cands = _by_relation(cands, desc, facts)
    return frozenset(o.obj_id for o in cands)


def event_range(desc: Description, obj_ids: tuple[int, ...], facts: SceneFacts) -> tuple[int, int]:
    """Half-open frame range where what tells the objects apart happens (whole clip when static)."""
    frames = facts.scene.frames
    if desc.motion is not None:
        spans = [facts.motions[i][desc.motion] for i in obj_ids]
        return min(s for s, _ in spans), max(e for _, e in spans)
    if desc.position is not None and desc.position.startswith("end:"):
        cands = _noun_matches(desc.noun, facts)
        winners = _extreme_frames(cands, desc.position.removeprefix("end:"), facts)
        start = frames
        while start > 0 and winners[start - 1] == obj_ids[0]:
            start -= 1
        return start, frames
    return 0, frames


def _noun_variants(obj: SceneObject) -> list[NounPhrase]:
    return [
        NounPhrase(obj.colour, obj.shape), NounPhrase(None, obj.shape), NounPhrase(obj.colour, None),
        NounPhrase(obj.colour, obj.shape, "big"), NounPhrase(obj.colour, obj.shape, "small"),
        NounPhrase(None, obj.shape, "big"), NounPhrase(None, obj.shape, "small"),
    ]


def candidate_descriptions(facts: SceneFacts) -> list[Description]:
    """Every description worth checking for this scene, in a fixed order (no set iteration)."""
    objects = facts.scene.objects
    nouns = list(dict.fromkeys(n for o in objects for n in _noun_variants(o)))
    plain = [n for n in nouns if n.size is None]
    tags = list(dict.fromkeys(tag for o in objects for tag in facts.motions[o.obj_id]))
    refs = [n for n in plain if n.colour or n.shape]
    out = [Description(n) for n in nouns]
    for noun in [*plain, NounPhrase()]:
        out += [Description(noun, motion=tag) for tag in tags]
        out += [Description(noun, position=p) for p in POSITIONS]
        out += [Description(noun, relation=r, ref=ref) for r in RELATIONS for ref in refs if ref != noun]
    return out


def _valid(desc: Description, objs: frozenset[int]) -> bool:
    """Picks someone; several only through plain wording ("the objects" alone would say nothing)."""
    if len(objs) <= 1:
        return len(objs) == 1
    return not desc.superlative() and (desc.noun != NounPhrase() or desc.motion is not None)


def _priority(desc: Description, objs: frozenset[int], facts: SceneFacts) -> float:
    """Higher first: what tells look-alikes apart (motion most of all), then plain attributes."""
    if len(objs) > 1:
        return 2.0
    if desc.motion is None and desc.position is None and desc.relation is None:
        return 3.5 if desc.noun.size else 2.5  # a size word is what tells same-colour twins apart
    if len(_noun_matches(desc.noun, facts)) <= 1:
        return 1.0  # qualifier is redundant: the noun alone picks the object
    (obj_id,) = objs
    if _look_alikes(obj_id, facts):  # only the qualifier can tell it apart
        return 4.0 if desc.motion is not None else 3.0
    return 2.0


def _look_alikes(obj_id: int, facts: SceneFacts) -> list[SceneObject]:
    """The other objects of the scene with the same colour and shape as ``obj_id``."""
    target = next(o for o in facts.scene.objects if o.obj_id == obj_id)
    return [o for o in facts.scene.objects
            if o.obj_id != obj_id and (o.colour, o.shape) == (target.colour, target.shape)]


def render_text(desc: Description, count: int, rng: np.random.Generator) -> str:
    """Words for a description that picks out ``count`` objects, through a randomly chosen template."""
    plural = count > 1
    variant = int(rng.integers(0, 2))
    np_text = desc.noun.text(plural=False, variant=variant)
    nps = desc.noun.text(plural=True, variant=variant)
    if desc.motion is not None:
        tag = desc.motion
        family = tag.split(":")[0] if tag.split(":")[0] in _MOTION_TEMPLATES else "dir"
        templates = _MOTION_TEMPLATES[family][int(plural)]
        first, _, second = tag.removeprefix("turn:").partition("-")
        text = str(rng.choice(templates))
        return text.format(np=np_text, nps=nps, d=tag, a=first, b=second)
    if desc.position is not None:
        where = desc.position.removeprefix("end:")
        phrase, superlative = _POSITION_WORDS[where]
        if desc.position.startswith("end:"):
            options = [f"the {np_text} that ends up {phrase}", f"the {np_text} ending up {phrase}"]
            return str(rng.choice(options))
        return str(rng.choice([f"the {np_text} {phrase}", f"the {superlative} {np_text}"]))
    if desc.relation is not None and desc.ref is not None:
        template = str(rng.choice(_RELATION_TEMPLATES[desc.relation]))
        return template.format(np=np_text, ref=desc.ref.text(variant=variant))
    if plural:
        options = [f"the {nps}", f"all the {nps}"]
        if count in _COUNT_WORDS:
            options.append(f"the {_COUNT_WORDS[count]} {nps}")
        return str(rng.choice(options))
    return str(rng.choice([f"the {np_text}", np_text]))


def _tags(desc: Description, obj_ids: tuple[int, ...], facts: SceneFacts) -> tuple[str, ...]:
    tags = [f"{key}:{value}" for key, value in
            (("colour", desc.noun.colour), ("shape", desc.noun.shape), ("size", desc.noun.size),
             ("motion", desc.motion), ("position", desc.position), ("relation", desc.relation)) if value]
    if desc.ref is not None:
        (ref,) = _noun_matches(desc.ref, facts)
        tags.append(f"ref:{ref.obj_id}")
    return tuple(tags)


def _diverse_order(items: list[tuple[float, Description]], rng: np.random.Generator) -> list[Description]:
    """Best priority first, random among equals, one of each qualifier kind before any repeats."""
    noise = rng.random(len(items))
    ranked = [items[i][1] for i in sorted(range(len(items)), key=lambda i: (-items[i][0], noise[i]))]
    seen: set[tuple[str, bool]] = set()
    first, rest = [], []
    for desc in ranked:
        key = (desc.kind(False), desc.noun.size is None)
        (rest if key in seen else first).append(desc)
        seen.add(key)
    return first + rest


def describe_scene(
    scene: Scene, rng: np.random.Generator, max_expressions: int = 12, per_object: int = 3, twins: bool = False
) -> list[SynthExpression]:
    """Unambiguous expressions for ``scene``: several per object where possible, some about several objects.

    Objects take turns, so every describable object gets one expression before any gets a second;
    expressions about several objects get about a quarter of the budget. ``twins`` adds, beyond the
    budget, for each picked expression that tells a look-alike apart, one with the same noun and the
    same kind of qualifier naming the look-alike ("the circle on the left" / "the circle on the
    right"): only the qualifier words differ, so they alone carry the training signal.
    """
    facts = SceneFacts.of(scene)
    groups: dict[tuple[int, ...], list[tuple[float, Description]]] = {}
    for desc in candidate_descriptions(facts):
        objs = resolve(desc, facts)
        if _valid(desc, objs):
            groups.setdefault(tuple(sorted(objs)), []).append((_priority(desc, objs, facts), desc))
    keys = list(groups)
    singles = [keys[i] for i in rng.permutation(len(keys)) if len(keys[i]) == 1]
    multis = [keys[i] for i in rng.permutation(len(keys)) if len(keys[i]) > 1]
    queues = {k: _diverse_order(groups[k], rng)[:per_object] for k in keys}
    # plural expressions get about a quarter of the budget, singular ones take turns for the rest
    multi_budget = min(len(multis), max(1, max_expressions // 4))
    order = [(r, k) for r in range(per_object) for k in singles if r < len(queues[k])]
    picks = order[: max_expressions - multi_budget]
    picks += [(0, k) for k in multis[: max_expressions - len(picks)]]
    chosen = [(queues[key][round_], key) for round_, key in picks]
    if twins:
        chosen += _twin_descriptions(chosen, groups, facts, rng)
    out: list[SynthExpression] = []
    texts: set[str] = set()
    for desc, key in chosen:
        text = render_text(desc, len(key), rng)
        if text in texts:
            continue
        texts.add(text)
        out.append(
            SynthExpression(
                text=text, obj_ids=key, kind=desc.kind(len(key) > 1), motion=desc.motion,
                tags=_tags(desc, key, facts), event=event_range(desc, key, facts),
            )
        )
    return out


def _twin_descriptions(
    chosen: list[tuple[Description, tuple[int, ...]]],
    groups: dict[tuple[int, ...], list[tuple[float, Description]]],
    facts: SceneFacts,
    rng: np.random.Generator,
) -> list[tuple[Description, tuple[int, ...]]]:
    """For each chosen one-object description with a qualifier, one of the same noun and qualifier kind
    that names a look-alike of its object (same colour and shape), when the scene has one."""
    taken = {(desc, key) for desc, key in chosen}
    out: list[tuple[Description, tuple[int, ...]]] = []
    for desc, key in chosen:
        if len(key) != 1 or desc.kind(False) == "attribute":
            continue
        for other in _look_alikes(key[0], facts):
            twin_key = (other.obj_id,)
            options = [d for _, d in groups.get(twin_key, [])
                       if d.noun == desc.noun and d.kind(False) == desc.kind(False) and (d, twin_key) not in taken]
            if options:
                pick = options[int(rng.integers(len(options)))]
                taken.add((pick, twin_key))
                out.append((pick, twin_key))
    return out


# ---------------------------------------------------------------- counting questions and grounded captions
# The generator draws these from an rng stream of their own, after the expressions, so nothing above changed.

_COUNT_NOUN_TEMPLATES = ("how many {nps} are there?", "how many {nps} can you see?", "how many {nps} are in the video?")
_COUNT_MOTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "dir": ("how many {nps} move {d}?", "how many {nps} go {d}?"),
    "still": ("how many {nps} stay still?", "how many {nps} do not move?"),
    "start": ("how many {nps} start moving?",),
    "stop": ("how many {nps} stop moving?",),
    "turn": ("how many {nps} move {a} then {b}?",),
    "enter": ("how many {nps} come into view?",),
    "leave": ("how many {nps} leave the scene?",),
}
_ABSENT_MOTIONS = ("left", "right", "up", "down", "still")  # asked about even when no object does it


def _count_text(desc: Description, rng: np.random.Generator) -> str:
    nps = desc.noun.text(plural=True)
    if desc.motion is None:
        return str(rng.choice(_COUNT_NOUN_TEMPLATES)).format(nps=nps)
    family = desc.motion.split(":")[0]
    family = family if family in _COUNT_MOTION_TEMPLATES else "dir"
    first, _, second = desc.motion.removeprefix("turn:").partition("-")
    return str(rng.choice(_COUNT_MOTION_TEMPLATES[family])).format(nps=nps, d=desc.motion, a=first, b=second)


def _count_category(desc: Description) -> str:
    if desc.motion is not None:
        return "motion"
    has = (desc.noun.colour is not None, desc.noun.shape is not None)
    return {(True, True): "colour+shape", (True, False): "colour", (False, True): "shape"}.get(has, "all")


def count_candidates(facts: SceneFacts) -> list[Description]:
    """Descriptions worth counting, in a fixed order: every colour/shape (present or not), then motions.

    Motions are asked of nouns that occur in the scene, including common motions no object makes, so
    zero is a frequent answer of both kinds.
    """
    objects = facts.scene.objects
    nouns = [NounPhrase(c, s) for c in COLOURS for s in SHAPES]
    nouns += [NounPhrase(c) for c in COLOURS] + [NounPhrase(None, s) for s in SHAPES] + [NounPhrase()]
    present = [NounPhrase()]
    present += list(dict.fromkeys(NounPhrase(o.colour) for o in objects))
    present += list(dict.fromkeys(NounPhrase(None, o.shape) for o in objects))
    present += list(dict.fromkeys(NounPhrase(o.colour, o.shape) for o in objects))
    tags = list(dict.fromkeys([*(t for o in objects for t in facts.motions[o.obj_id]), *_ABSENT_MOTIONS]))
    return [Description(n) for n in nouns] + [Description(n, motion=t) for n in present for t in tags]


def count_questions(facts: SceneFacts, rng: np.random.Generator, limit: int = 6) -> list[SynthQuestion]:
    """Up to ``limit`` counting questions with answers 0..N, one or two of them answered zero.

    The non-zero ones rotate over kinds (colour+shape, colour, shape, all, motion) so no kind crowds out
    the others; every answer is ``resolve`` of the question's description.
    """
    if limit < 1:
        raise ValueError(f"count_questions: limit must be >= 1, got {limit}")
    answers = [(desc, tuple(sorted(resolve(desc, facts)))) for desc in count_candidates(facts)]
    zeros = [a for a in answers if not a[1]]
    by_kind: dict[str, list[tuple[Description, tuple[int, ...]]]] = {}
    for item in answers:
        if item[1]:
            by_kind.setdefault(_count_category(item[0]), []).append(item)
    n_zero = min(len(zeros), limit, 1 + int(rng.random() < 0.4))
    picks = [zeros[int(i)] for i in rng.permutation(len(zeros))[:n_zero]]
    queues = {k: [v[int(i)] for i in rng.permutation(len(v))] for k, v in by_kind.items()}
    kinds = [list(queues)[int(i)] for i in rng.permutation(len(queues))]
    while len(picks) < limit and any(queues.values()):
        for kind in kinds:
            if queues[kind] and len(picks) < limit:
                picks.append(queues[kind].pop(0))
    out: list[SynthQuestion] = []
    texts: set[str] = set()
    for i in rng.permutation(len(picks)):
        desc, obj_ids = picks[int(i)]
        text = _count_text(desc, rng)
        if text in texts:
            continue
        texts.add(text)
        out.append(SynthQuestion(text=text, obj_ids=obj_ids, count=len(obj_ids), tags=_tags(desc, obj_ids, facts)))
    return out


def motion_predicate(obj: SceneObject, facts: SceneFacts) -> tuple[str, str]:
    """What an object does over the clip as a verb phrase, (singular, plural): "moves left and then stops"."""
    tags = facts.motions[obj.obj_id]
    if "enter" in tags:
        return "comes into view", "come into view"
    if "leave" in tags:
        return "leaves the scene", "leave the scene"
    moving: list[str] = []
    for run in runs(obj.steps):
        if run.direction is not None and (not moving or moving[-1] != run.direction):
            moving.append(run.direction)
    if not moving:
        return "stays still", "stay still"
    path = " then ".join(moving)
    starts, stops = "start" in tags, "stop" in tags
    if starts and stops:
        return f"moves {path} for a while", f"move {path} for a while"
    if starts:
        return f"starts moving {path}", f"start moving {path}"
    if stops:
        return f"moves {path} and then stops", f"move {path} and then stop"
    return f"moves {path}", f"move {path}"


@dataclass(frozen=True)
class _CaptionUnit:
    """One grounded phrase of a caption: words, description, objects, and what they do (None: in the words)."""

    phrase: str
    desc: Description
    obj_ids: tuple[int, ...]
    predicate: tuple[str, str] | None


def _noun_unit(group: list[SceneObject], facts: SceneFacts, rng: np.random.Generator) -> _CaptionUnit:
    """Objects of one colour and shape that all do the same: "two red circles", or "a circle" when unique."""
    first = group[0]
    ids = frozenset(o.obj_id for o in group)
    options = [NounPhrase(first.colour, first.shape)]
    options += [n for n in (NounPhrase(None, first.shape), NounPhrase(first.colour))
                if resolve(Description(n), facts) == ids]
    pick = 0 if len(options) == 1 or rng.random() < 0.6 else 1 + int(rng.integers(len(options) - 1))
    plural = len(group) > 1
    words = options[pick].text(plural=plural, variant=0 if plural else 1)  # "object" / "objects"
    phrase = f"{_COUNT_WORDS.get(len(group), str(len(group)))} {words}" if plural else f"a {words}"
    return _CaptionUnit(phrase, Description(options[pick]), tuple(sorted(ids)), motion_predicate(first, facts))


def _static_description(obj: SceneObject, facts: SceneFacts) -> Description | None:
    """A description without motion (size, position or relation) that picks out ``obj`` alone, if any."""
    for desc in candidate_descriptions(facts):
        if desc.motion is None and desc.noun.shape == obj.shape and resolve(desc, facts) == {obj.obj_id}:
            return desc
    return None


def _qualified_units(
    group: list[SceneObject], facts: SceneFacts, rng: np.random.Generator, static_first: bool
) -> list[_CaptionUnit]:
    """Same-looking objects that do different things: each set named by a qualifier that resolves to it.

    A motion qualifier already says what they do; a static one (size, position, relation) leaves the verb
    free, which ``static_first`` prefers so the caption can be a sentence of clauses.
    """
    parts: dict[tuple[str, str], list[SceneObject]] = {}
    for obj in group:
        parts.setdefault(motion_predicate(obj, facts), []).append(obj)
    noun = NounPhrase(group[0].colour, group[0].shape)
    units: list[_CaptionUnit] = []
    for predicate, members in parts.items():
        ids = frozenset(o.obj_id for o in members)
        shared = [t for t in facts.motions[members[0].obj_id] if all(t in facts.motions[o.obj_id] for o in members)]
        by_motion = [Description(noun, motion=t) for t in shared if resolve(Description(noun, motion=t), facts) == ids]
        static = [(obj, _static_description(obj, facts)) for obj in members]
        if by_motion and not (static_first and all(desc is not None for _, desc in static)):
            desc = by_motion[int(rng.integers(len(by_motion)))]
            units.append(_CaptionUnit(render_text(desc, len(ids), rng), desc, tuple(sorted(ids)), None))
            continue
        for obj, found in static:  # an object neither motion nor anything else tells apart is left out
            if found is not None:
                text = render_text(found, 1, rng)
                text = text if text.startswith("the ") else f"the {text}"
                units.append(_CaptionUnit(text, found, (obj.obj_id,), predicate))
    return units


def _caption(units: list[_CaptionUnit], facts: SceneFacts, rng: np.random.Generator, listing: bool) -> SynthCaption:
    """Clauses "PHRASE does X" joined into one sentence, or a listing "The video shows PHRASE that does X, ..."."""
    parts: list[str | tuple[str, tuple[int, ...], tuple[str, ...]]] = []
    if listing:
        parts.append(str(rng.choice(["The video shows ", "We see ", "In the video we see "])))
    for i, unit in enumerate(units):
        if i:
            last = i == len(units) - 1
            after_while = isinstance(parts[-1], str) and parts[-1].endswith(" while")  # no "... a while while"
            two = len(units) == 2 and not listing and not after_while and rng.random() < 0.5
            parts.append((" while " if two else " and ") if last else ", ")
        phrase = unit.phrase[0].upper() + unit.phrase[1:] if i == 0 and not listing else unit.phrase
        parts.append((phrase, unit.obj_ids, _tags(unit.desc, unit.obj_ids, facts)))
        if unit.predicate is not None:
            verb = unit.predicate[int(len(unit.obj_ids) > 1)]
            parts.append(f" that {verb}" if listing else f" {verb}")
    parts.append(".")
    return SynthCaption.from_parts(parts)


def grounded_captions(facts: SceneFacts, rng: np.random.Generator, limit: int = 2) -> list[SynthCaption]:
    """Up to ``limit`` GLaMM-style scene captions whose marked phrases each resolve to exactly their objects.

    Objects of one colour and shape that all do the same share a phrase ("two red circles stay still");
    look-alikes that differ each get a phrase with the qualifier that tells them apart; an object nothing
    tells apart is left out rather than named ambiguously. The first caption is a sentence of clauses
    when every phrase has a verb, the next ones list the objects.
    """
    if limit < 1:
        raise ValueError(f"grounded_captions: limit must be >= 1, got {limit}")
    groups: dict[tuple[str, str], list[SceneObject]] = {}
    for obj in facts.scene.objects:
        groups.setdefault((obj.colour, obj.shape), []).append(obj)
    out: list[SynthCaption] = []
    for attempt in range(limit):
        units: list[_CaptionUnit] = []
        for group in groups.values():
            if len({motion_predicate(o, facts) for o in group}) == 1:
                units.append(_noun_unit(group, facts, rng))
            else:
                units += _qualified_units(group, facts, rng, static_first=attempt == 0)
        if not units:
            break
        units = [units[int(i)] for i in rng.permutation(len(units))]
        listing = attempt > 0 or any(u.predicate is None for u in units)
        caption = _caption(units, facts, rng, listing)
        if all(caption.text != c.text for c in out):
            out.append(caption)
    return out
