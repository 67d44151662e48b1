"""Flickr30k Entities: phrase ↔ box annotations for grounding real captions.

Plummer et al. 2015, "Flickr30k Entities: Collecting Region-to-Phrase Correspondences for Richer
Image-to-Sentence Models". For each Flickr30k image the release has

* ``Sentences/<image_id>.txt``: five captions, one per line, whose noun phrases are bracketed with
  an entity id and one or more types::

      [/EN#18/people A man] in [/EN#19/clothing an orange hat] starring at something .

  (``/EN#123/people/bodyparts`` carries two types; ``/EN#0/notvisual`` marks phrases with no
  region). Entity ids are shared by all captions of the image (coreference chains);
* ``Annotations/<image_id>.xml``: PASCAL-VOC-like boxes. One ``<object>`` can list several
  ``<name>`` entity ids; instead of a ``<bndbox>`` it may say ``<nobndbox>1</nobndbox>`` (not
  visible) or ``<scene>1</scene>`` (the whole scene). An entity can have several boxes.

`load_entities(root, image_id)` returns, per sentence, the plain tokens and the phrases with their
boxes; `train.grounding.ground_span` scores a caption's attention against such boxes.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

Box = tuple[int, int, int, int]
"""(xmin, ymin, xmax, ymax) as stored: 1-based pixel indices, max inclusive (VOC)."""

_TAG = re.compile(r"^\[/EN#(\d+)((?:/[^/\s\]]+)*)$")


class EntitiesFormatError(ValueError):
    """A Sentences/Annotations file that does not follow the Flickr30k Entities format."""


@dataclass
class Phrase:
    first_word_index: int
    """Index of the phrase's first word in the sentence's `tokens`."""
    words: list[str]
    entity_id: str
    types: list[str]
    boxes: list[Box] = field(default_factory=list)
    """The entity's boxes in the image (empty for notvisual / scene / no-box entities)."""

    @property
    def span(self) -> tuple[int, int]:
        """[start, stop) of the phrase in the sentence's tokens."""
        return self.first_word_index, self.first_word_index + len(self.words)


@dataclass
class EntitySentence:
    tokens: list[str]
    """The plain sentence, whitespace-split, markup removed (case and punctuation as written)."""
    phrases: list[Phrase]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass
class EntityAnnotation:
    size: tuple[int, int]
    """(width, height) of the image."""
    boxes: dict[str, list[Box]]
    """Entity id → its boxes."""
    scene: set[str] = field(default_factory=set)
    """Entity ids annotated as the whole scene."""
    nobox: set[str] = field(default_factory=set)
    """Entity ids annotated as not visible (no box)."""


def parse_sentence(line: str) -> EntitySentence:
    """Parse one marked-up sentence into tokens and phrases (boxes not yet attached)."""
    tokens: list[str] = []
    phrases: list[Phrase] = []
    current: Phrase | None = None
    for piece in line.split():
        if current is None and piece.startswith("[/EN#"):
            m = _TAG.match(piece)
            if m is None:
                raise EntitiesFormatError(f"bad phrase tag {piece!r} in {line!r}")
            types = [t for t in m.group(2).split("/") if t]
            current = Phrase(len(tokens), [], m.group(1), types)
            continue
        if current is not None and piece.endswith("]"):
            # NOTE: the closing bracket is glued to the phrase's last word ("hat]").
            word = piece[:-1]
            if word:
                tokens.append(word)
                current.words.append(word)
            phrases.append(current)
            current = None
            continue
        tokens.append(piece)
        if current is not None:
            current.words.append(piece)
    if current is not None:
        raise EntitiesFormatError(f"unclosed phrase [/EN#{current.entity_id} in {line!r}")
    return EntitySentence(tokens, phrases)


def parse_sentences(text: str) -> list[EntitySentence]:
    """Parse a whole ``Sentences/<id>.txt`` file (blank lines skipped)."""
    return [parse_sentence(line) for line in text.splitlines() if line.strip()]


def _int(node: ET.Element, tag: str, where: str) -> int:
    child = node.find(tag)
    if child is None or child.text is None:
        raise EntitiesFormatError(f"{where}: missing <{tag}>")
    try:
        return int(round(float(child.text.strip())))
    except ValueError:
        raise EntitiesFormatError(f"{where}: <{tag}> is not a number: {child.text!r}") from None


def _flag(obj: ET.Element, tag: str) -> bool:
    node = obj.find(tag)
    return node is not None and (node.text or "").strip() not in ("", "0")


def parse_annotation(xml_text: str | bytes) -> EntityAnnotation:
    """Parse an ``Annotations/<id>.xml`` file."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise EntitiesFormatError(f"not valid XML: {e}") from None
    size = root.find("size")
    if size is None:
        raise EntitiesFormatError("missing <size>")
    ann = EntityAnnotation((_int(size, "width", "size"), _int(size, "height", "size")), {})
    for obj in root.iter("object"):
        ids = [(n.text or "").strip() for n in obj.findall("name") if (n.text or "").strip()]
        box = obj.find("bndbox")
        if box is not None:
            b = tuple(_int(box, t, f"object {ids}") for t in ("xmin", "ymin", "xmax", "ymax"))
            for i in ids:
                ann.boxes.setdefault(i, []).append(b)  # type: ignore[arg-type]
        if _flag(obj, "scene"):
            ann.scene.update(ids)
        if _flag(obj, "nobndbox"):
            ann.nobox.update(ids)
    return ann


def attach_boxes(sentences: list[EntitySentence], ann: EntityAnnotation) -> list[EntitySentence]:
    """Fill every phrase's ``boxes`` from the annotation (in place; returns the sentences)."""
    for s in sentences:
        for p in s.phrases:
            p.boxes = list(ann.boxes.get(p.entity_id, []))
    return sentences


def load_entities(root: str | Path, image_id: str) -> tuple[list[EntitySentence], EntityAnnotation]:
    """Sentences (with phrase boxes) and the annotation of one image under the release ``root``."""
    root = Path(root)
    sent_path = root / "Sentences" / f"{image_id}.txt"
    ann_path = root / "Annotations" / f"{image_id}.xml"
    for p in (sent_path, ann_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
    ann = parse_annotation(ann_path.read_bytes())
    sentences = parse_sentences(sent_path.read_text(encoding="utf-8"))
    return attach_boxes(sentences, ann), ann
