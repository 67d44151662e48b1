"""Caption grammar for the procedural scenes dataset (see ``train.data.scenes``).

Objects are dicts with ``shape``, ``colour``, ``size`` and ``box`` ([x0, y0, x1, y1], x1/y1
exclusive, image coordinates with y pointing down). Objects that share shape and colour are
merged into one *entity* with a count ("two green triangles"); entities are ordered left to
right by centre x, and every image gets exactly five captions:

* caption 0 is the canonical phrasing, and the canonical phrasing appears once more among
  captions 1-4, so it is the most frequent reference;
* the other three are distinct paraphrases drawn from the templates that fit the scene.

Canonical forms (E = entity phrase, REL = relation of E1 to E2 computed from geometry)::

    1 entity:   E1                         "a large red circle"
    2 entities: E1 REL E2                  "a small blue square to the left of a large yellow star"
    3 entities: E1 REL E2 and E3           "a red ... above a blue ... and a green ..."
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles",
                           "star": "stars", "cross": "crosses", "heart": "hearts"}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 175, 45),
    "blue": (35, 70, 230),
    "yellow": (245, 225, 20),
    "purple": (145, 40, 195),
    "orange": (255, 135, 0),
}
SIZES: tuple[str, ...] = ("small", "large")
NUMBERS: dict[int, str] = {2: "two", 3: "three"}
REVERSE: dict[str, str] = {"to the left of": "to the right of", "to the right of": "to the left of",
                           "above": "below", "below": "above", "next to": "next to"}

Entity = dict[str, Any]


def centre(box: Sequence[float]) -> tuple[float, float]:
    """Centre (x, y) of an ``[x0, y0, x1, y1]`` box with exclusive x1/y1."""
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def relation(a: Sequence[float], b: Sequence[float]) -> str:
    """Spatial relation of centre ``a`` to centre ``b``: "A <relation> B".

    Left/right when the horizontal offset dominates (|dx| >= |dy|), else above/below.
    """
    dx, dy = b[0] - a[0], b[1] - a[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def group_entities(objects: Sequence[dict[str, Any]]) -> list[Entity]:
    """Merge objects sharing shape+colour into counted entities, ordered left to right."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for obj in objects:
        groups.setdefault((obj["shape"], obj["colour"]), []).append(obj)
    entities = []
    for (shape, colour), members in groups.items():
        sizes = {m["size"] for m in members}
        cs = [centre(m["box"]) for m in members]
        entities.append({
            "shape": shape, "colour": colour, "count": len(members),
            # NOTE: a group keeps its size word only if all members agree ("two green
            # triangles" for one small + one large), so no caption states a wrong size.
            "size": members[0]["size"] if len(sizes) == 1 else None,
            "centre": (float(np.mean([c[0] for c in cs])), float(np.mean([c[1] for c in cs]))),
        })
    entities.sort(key=lambda e: (e["centre"][0], e["centre"][1]))
    return entities


def phrase(ent: Entity, with_size: bool = True) -> str:
    """Noun phrase for an entity: "a large red circle", "an orange star", "two small red hearts"."""
    words = []
    if with_size and ent["size"] is not None:
        words.append(ent["size"])
    words.append(ent["colour"])
    if ent["count"] == 1:
        words.append(ent["shape"])
        return f"{article(words[0])} {' '.join(words)}"
    words.append(PLURALS[ent["shape"]])
    return f"{NUMBERS.get(ent['count'], str(ent['count']))} {' '.join(words)}"


def entity_relation(a: Entity, b: Entity) -> str:
    # NOTE: the centre of a counted group can lie anywhere between its members, so a
    # left/above word would often be false for one of them; groups always get "next to".
    if a["count"] > 1 or b["count"] > 1:
        return "next to"
    return relation(a["centre"], b["centre"])


def _there(ents: list[Entity], body: str) -> str:
    return ("there are " if ents[0]["count"] > 1 else "there is ") + body


def canonical_caption(objects: Sequence[dict[str, Any]]) -> str:
    ents = group_entities(objects)
    if len(ents) == 1:
        return phrase(ents[0])
    rel = entity_relation(ents[0], ents[1])
    text = f"{phrase(ents[0])} {rel} {phrase(ents[1])}"
    if len(ents) == 3:
        text += f" and {phrase(ents[2])}"
    return text


def paraphrases(objects: Sequence[dict[str, Any]]) -> list[str]:
    """All non-canonical templates that are true for this scene (always at least three)."""
    ents = group_entities(objects)
    canon = canonical_caption(objects)
    out = [_there(ents, canon), f"an image with {canon}"]
    p = [phrase(e) for e in ents]
    short = [phrase(e, with_size=False) for e in ents]
    if len(ents) == 1:
        out += [f"a picture of {p[0]}", short[0]]
        return out
    rel = entity_relation(ents[0], ents[1])
    if len(ents) == 2:
        out.append(f"{short[0]} and {short[1]}")
        out.append(f"{p[1]} {REVERSE[rel]} {p[0]}")
        if rel == "to the left of":
            out.append(f"{p[0]} on the left and {p[1]} on the right")
        elif rel in ("above", "below"):
            top, bottom = (p[0], p[1]) if rel == "above" else (p[1], p[0])
            out.append(f"{top} at the top and {bottom} at the bottom")
        return out
    out.append(f"{short[0]} {short[1]} and {short[2]}")
    out.append(f"{p[1]} {REVERSE[rel]} {p[0]} and {p[2]}")
    if rel == "to the left of" and entity_relation(ents[1], ents[2]) == "to the left of":
        # Sizes dropped here to keep every caption at <= 20 words.
        out.append(f"{short[0]} on the left {short[1]} in the middle and {short[2]} on the right")
    return out


def make_captions(objects: Sequence[dict[str, Any]], rng: np.random.Generator) -> list[str]:
    """Five captions: canonical first, canonical again plus three distinct paraphrases after."""
    canon = canonical_caption(objects)
    options = paraphrases(objects)
    picks = [options[i] for i in rng.choice(len(options), size=3, replace=False)]
    rest = [canon, *picks]
    order = rng.permutation(4)
    return [canon, *(rest[i] for i in order)]
