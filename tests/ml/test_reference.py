"""The exporter's drift reference: BIO tags to entity spans the way the NER service decodes them."""

from __future__ import annotations

import pytest
from textpulse.ml.export import entity_spans


def test_entity_spans_group_bio_tags_and_average_their_scores() -> None:
    tags = [("B-ORG", 0.9), ("I-ORG", 0.7), ("O", 0.99), ("B-PER", 0.6), ("B-PER", 0.8), ("I-LOC", 0.5)]
    spans = entity_spans(tags)
    assert [t for t, _ in spans] == ["ORG", "PER", "PER", "LOC"]
    assert [s for _, s in spans] == pytest.approx([0.8, 0.6, 0.8, 0.5])


def test_entity_spans_of_no_entities_is_empty() -> None:
    assert entity_spans([]) == []
    assert entity_spans([("O", 0.9), ("O", 0.8)]) == []


def test_an_inside_tag_of_another_type_starts_a_new_entity() -> None:
    assert [t for t, _ in entity_spans([("B-ORG", 0.9), ("I-PER", 0.5), ("I-PER", 0.7)])] == ["ORG", "PER"]
