"""The exporter's drift reference: BIO tags to entity spans the way the NER service decodes them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textpulse.ml.export import entity_spans
from textpulse.ml.tokenization import spans_from_tags, split_words

TAGS = ["O", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_entity_spans_group_bio_tags_and_average_their_scores() -> None:
    tags = [("B-ORG", 0.9), ("I-ORG", 0.7), ("O", 0.99), ("B-PER", 0.6), ("B-PER", 0.8), ("I-LOC", 0.5)]
    spans = entity_spans(tags)
    # B-PER B-PER is one person, as the service publishes it (Tim / Cook tagged as two B's)
    assert [t for t, _ in spans] == ["ORG", "PER", "LOC"]
    assert [s for _, s in spans] == pytest.approx([0.8, 0.7, 0.5])


def test_a_second_b_of_the_same_type_continues_the_entity() -> None:
    """The B-after-B repair of the service's decoder (before it, the reference counted two entities)."""
    assert entity_spans([("B-ORG", 0.6), ("B-ORG", 0.8), ("I-ORG", 1.0)]) == [("ORG", pytest.approx(0.8))]
    # punctuation is a word of its own, tagged O: names in a list stay apart
    assert [t for t, _ in entity_spans([("B-ORG", 0.9), ("O", 0.9), ("B-ORG", 0.9)])] == ["ORG", "ORG"]


def test_entity_spans_of_no_entities_is_empty() -> None:
    assert entity_spans([]) == []
    assert entity_spans([("O", 0.9), ("O", 0.8)]) == []


def test_an_inside_tag_of_another_type_starts_a_new_entity() -> None:
    assert [t for t, _ in entity_spans([("B-ORG", 0.9), ("I-PER", 0.5), ("I-PER", 0.7)])] == ["ORG", "PER"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Credit", "Suisse", "Tim", "Cook", ",", ".", "and", "Group", "AG"]), st.sampled_from(TAGS)
        ),
        max_size=15,
    ),
    st.data(),
)
def test_the_reference_decodes_like_the_service(pairs: list[tuple[str, str]], data: st.DataObject) -> None:
    """Per-word tags of pre-split words give the entities the service's decoder gives on the joined text."""
    text = " ".join(word for word, _ in pairs)
    words = split_words(text)
    assert [w.text for w in words] == [word for word, _ in pairs]
    scores = [data.draw(st.floats(0, 1)) for _ in pairs]
    tags = [tag for _, tag in pairs]
    served = spans_from_tags(words, tags, scores, text)
    reference = entity_spans(list(zip(tags, scores, strict=True)))
    assert [t for t, _ in reference] == [s["entity"] for s in served]
    assert [s for _, s in reference] == pytest.approx([s["score"] for s in served])
