"""train/data/entities.py: Flickr30k Entities Sentences/*.txt and Annotations/*.xml parsing."""
from __future__ import annotations

import numpy as np
import pytest

from train.data.entities import (EntitiesFormatError, load_entities, parse_annotation,
                                 parse_sentence)
from train.grounding import ground_span

SENTENCES = """\
[/EN#18/people A man] in [/EN#19/clothing an orange hat] starring at something .
[/EN#18/people A man] wears [/EN#19/clothing an orange hat] and [/EN#20/clothing glasses] .
[/EN#18/people A man] with [/EN#21/clothing/bodyparts gloves] is in [/EN#0/notvisual the outdoors] .

[/EN#18/people He] looks at [/EN#22/scene the city] .
"""

ANNOTATION = """\
<annotation>
  <filename>1000092795.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object>
    <name>18</name>
    <bndbox><xmin>100</xmin><ymin>50</ymin><xmax>300</xmax><ymax>370</ymax></bndbox>
  </object>
  <object>
    <name>18</name>
    <bndbox><xmin>310</xmin><ymin>40</ymin><xmax>400</xmax><ymax>200</ymax></bndbox>
  </object>
  <object>
    <name>19</name>
    <name>21</name>
    <bndbox><xmin>150</xmin><ymin>45</ymin><xmax>220</xmax><ymax>90</ymax></bndbox>
  </object>
  <object>
    <name>20</name>
    <nobndbox>1</nobndbox>
  </object>
  <object>
    <name>22</name>
    <scene>1</scene>
  </object>
</annotation>
"""


@pytest.fixture
def release(tmp_path):
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Sentences" / "1000092795.txt").write_text(SENTENCES, encoding="utf-8")
    (tmp_path / "Annotations" / "1000092795.xml").write_text(ANNOTATION, encoding="utf-8")
    return tmp_path


def test_parse_sentence_tokens_and_phrases():
    s = parse_sentence(SENTENCES.splitlines()[0])
    assert s.tokens == "A man in an orange hat starring at something .".split()
    assert [(p.first_word_index, p.words, p.entity_id, p.types) for p in s.phrases] == [
        (0, ["A", "man"], "18", ["people"]),
        (3, ["an", "orange", "hat"], "19", ["clothing"])]
    assert s.phrases[1].span == (3, 6)
    assert s.tokens[3:6] == s.phrases[1].words


def test_several_types_notvisual_and_one_word_phrases():
    s = parse_sentence(SENTENCES.splitlines()[2])
    gloves, outdoors = s.phrases[1], s.phrases[2]
    assert gloves.types == ["clothing", "bodyparts"] and gloves.words == ["gloves"]
    assert gloves.first_word_index == 3 and s.tokens[3] == "gloves"
    assert (outdoors.entity_id, outdoors.types) == ("0", ["notvisual"])
    assert s.text == "A man with gloves is in the outdoors ."


def test_bad_markup_raises():
    with pytest.raises(EntitiesFormatError, match="unclosed"):
        parse_sentence("[/EN#1/people A man walks .")
    with pytest.raises(EntitiesFormatError, match="tag"):
        parse_sentence("[/EN#x/people A man] walks .")


def test_parse_annotation_boxes_scene_and_nobox():
    ann = parse_annotation(ANNOTATION)
    assert ann.size == (500, 375)
    assert ann.boxes["18"] == [(100, 50, 300, 370), (310, 40, 400, 200)]
    assert ann.boxes["19"] == ann.boxes["21"] == [(150, 45, 220, 90)]  # one object, two names
    assert "20" not in ann.boxes and ann.nobox == {"20"}
    assert ann.scene == {"22"} and "22" not in ann.boxes
    with pytest.raises(EntitiesFormatError, match="XML"):
        parse_annotation("<annotation><size>")
    with pytest.raises(EntitiesFormatError, match="size"):
        parse_annotation("<annotation></annotation>")


def test_load_entities_attaches_boxes(release):
    sentences, ann = load_entities(release, "1000092795")
    assert len(sentences) == 4  # the blank line is skipped
    man, hat = sentences[0].phrases
    assert man.boxes == [(100, 50, 300, 370), (310, 40, 400, 200)]
    assert hat.boxes == [(150, 45, 220, 90)]
    glasses = sentences[1].phrases[2]
    assert glasses.entity_id == "20" and glasses.boxes == []
    assert sentences[2].phrases[2].boxes == [] and sentences[3].phrases[1].boxes == []
    with pytest.raises(FileNotFoundError):
        load_entities(release, "404")


def test_ground_a_caption_span_against_entity_boxes(release):
    sentences, ann = load_entities(release, "1000092795")
    hat = sentences[0].phrases[1]
    W, H = ann.size  # 500×375, crop: the square seen is x 62.5..437.5, cell = 375/7 ≈ 53.6 px
    att = np.full((len(sentences[0].tokens) + 1, 7, 7), 1 / 49, np.float32)
    att[hat.span[1] - 1] = 0
    att[hat.span[1] - 1, 1, 2] = 1.0  # row 1 (y 53.6..107), column 2 (x 169.6..223.2)
    hit, mass = ground_span(att, hat.span, hat.boxes, size=(W, H), image_size=224)
    # the hat box (0-based x 149..219, y 44..89) holds the cell's centre and ~60 % of its area
    assert hit and 0.3 < mass < 0.7
    miss = ground_span(att, hat.span, sentences[0].phrases[0].boxes[1:], size=(W, H), image_size=224)
    assert not miss[0] and miss[1] < 0.05
