"""Social-text normalisation: links and handles become placeholder words, offsets map back.

Pure (no model): the offset map, the word splitter the NER model sees, the training-side
word rule, and the BIO decoding on tweets with hand-made tags.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textpulse.ml.social import URL_WORD, USER_WORD, find_spans, normalise, placeholder_of, url_spans
from textpulse.ml.tokenization import normalise_words, spans_from_tags, split_words

TWEETS = [
    "$BYND - JPMorgan reels in expectations on Beyond Meat https://t.co/bd0xbFGjkT",
    "Credit Suisse shares fell after the report https://t.co/bd0xbFGjkT via @Reuters",
    "@elonmusk Tesla and Goldman Sachs https://www.reuters.com/business/credit-suisse-deal-ubs-2023 RT @jane_doe",
    "read this: t.co/AbC123, bit.ly/xyz and www.bloomberg.com/news/articles/2023-03-19/ubs.",
    "Amazon.com up 3% ; mail ir@apple.com ; $AAPL https://twitter.com/i/web/status/1234…",
]

#: Fragments a tweet is made of: words, names, links (glued or not), handles, cashtags, numbers, punctuation.
FRAGMENTS = st.sampled_from(
    [
        "Credit", "Suisse", "Apple", "Inc.", "the", "U.S.", "9,000", "5.3%", "$AAPL", "$100", "t.co", "Amazon.com",
        "https://t.co/bd0xbFGjkT", "http://bit.ly/1L7fhny", "www.reuters.com/a-b", "t.co/Xy9", "https://",
        "http", "https…", "@user", "@Reuters", "@jane_doe", "ir@apple.com", "@", "(", ")", ".", ",", ":", "…",
        "’s", "é", "\n",
    ]
)  # fmt: skip
TEXTS = st.lists(st.tuples(FRAGMENTS, st.sampled_from(["", " ", "  "])), max_size=14).map(
    lambda parts: "".join(f + sep for f, sep in parts)
)


def test_links_and_handles_are_found() -> None:
    text = TWEETS[3]
    assert [text[s:e] for s, e in url_spans(text)] == [
        "t.co/AbC123",
        "bit.ly/xyz",
        "www.bloomberg.com/news/articles/2023-03-19/ubs",
    ]
    text = TWEETS[2]
    assert [(r.kind, text[r.start : r.end]) for r in find_spans(text)] == [
        ("user", "@elonmusk"),
        ("url", "https://www.reuters.com/business/credit-suisse-deal-ubs-2023"),
        ("user", "@jane_doe"),
    ]


def test_names_emails_and_numbers_are_left_alone() -> None:
    text = TWEETS[4]
    assert [text[r.start : r.end] for r in find_spans(text)] == ["https://twitter.com/i/web/status/1234"]
    assert normalise("Amazon.com rose 5.3% to $1,234.50 at 9:30").text == "Amazon.com rose 5.3% to $1,234.50 at 9:30"


def test_normalised_text_and_offsets() -> None:
    text = TWEETS[1]
    norm = normalise(text)
    assert norm.text == f"Credit Suisse shares fell after the report {URL_WORD} via {USER_WORD}"
    start = norm.text.index(URL_WORD)
    assert norm.to_original(start, start + len(URL_WORD)) == (43, 66)
    assert text[43:66] == "https://t.co/bd0xbFGjkT"
    assert norm.to_original(0, 13) == (0, 13)
    # a span from a verbatim word to a placeholder widens to the whole handle
    via = norm.text.index("via")
    assert text[slice(*norm.to_original(via, len(norm.text)))] == "via @Reuters"


def test_glued_placeholders_become_words_of_their_own() -> None:
    assert normalise("seehttps://t.co/x").text == f"see {URL_WORD}"
    assert normalise("(@jane)").text == f"( {USER_WORD} )"
    assert [w.text for w in split_words("seehttps://t.co/x!")] == ["see", URL_WORD, "!"]


@given(TEXTS)
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text).text
    assert normalise(once).text == once


@given(TEXTS, st.data())
def test_mapped_spans_lie_inside_the_original_and_never_cut_a_placeholder(text: str, data: st.DataObject) -> None:
    norm = normalise(text)
    start = data.draw(st.integers(0, len(norm.text)))
    end = data.draw(st.integers(start, len(norm.text)))
    mapped_start, mapped_end = norm.to_original(start, end)
    assert 0 <= mapped_start <= mapped_end <= len(text)
    for r in norm.replaced:
        assert not r.start < mapped_start < r.end
        assert not r.start < mapped_end < r.end
    # verbatim runs map one to one
    for segment in norm.segments:
        if segment.replaced is None:
            assert norm.text[segment.model_start : segment.model_end] == text[segment.start : segment.end]


@given(TEXTS)
def test_words_point_into_the_original(text: str) -> None:
    words = split_words(text)
    for before, after in itertools.pairwise(words):
        assert before.end <= after.start
    for word in words:
        if word.kind is None:
            assert text[word.start : word.end] == word.text
        else:
            assert word.text in {URL_WORD, USER_WORD}
            # the run it stands for is a link or handle as a training word too (train = serve)
            assert placeholder_of(text[word.start : word.end]) == word.text


@given(TEXTS)
def test_serving_words_of_raw_and_normalised_text_agree(text: str) -> None:
    """The model sees the same words whether the text was normalised before or not (train = serve)."""
    assert [w.text for w in split_words(text)] == [w.text for w in split_words(normalise(text).text)]


@pytest.mark.parametrize(
    ("word", "placeholder"),
    [
        ("http://tinyurl.com/24agj38", URL_WORD),
        ("https://t.co/bd0xbFGjkT.", URL_WORD),
        ("www.361capital.com", URL_WORD),
        ("t.co/x", URL_WORD),
        ("@paulwalk", USER_WORD),
        ("@Suzie55:", USER_WORD),
        ("http", URL_WORD),
        ("Amazon.com", None),
        ("t.co", None),
        ("ir@apple.com", None),
        ("@", None),
        ("Apple", None),
    ],
)
def test_placeholder_of_a_training_word(word: str, placeholder: str | None) -> None:
    assert placeholder_of(word) == placeholder


def test_training_words_get_placeholders_and_tag_o() -> None:
    words = ["@Tesla", "and", "Credit", "Suisse", "http://bit.ly/bgCyZ0"]
    tags = ["B-ORG", "O", "B-ORG", "I-ORG", "B-ORG"]
    assert normalise_words(words, tags) == (
        [USER_WORD, "and", "Credit", "Suisse", URL_WORD],
        ["O", "O", "B-ORG", "I-ORG", "O"],
    )
    assert normalise_words(words) == ([USER_WORD, "and", "Credit", "Suisse", URL_WORD], None)


def _tagged(text: str, tags: dict[str, str]) -> list[tuple[str, str]]:
    """Entities of ``text`` when each word (by its model text) gets the tag in ``tags`` (else O)."""
    words = split_words(text)
    spans = spans_from_tags(words, [tags.get(w.text, "O") for w in words], [0.9] * len(words), text)
    return [(s["entity"], s["text"]) for s in spans]


def test_a_link_is_never_an_entity_whatever_the_model_says() -> None:
    text = TWEETS[0]
    # the model tags the link's placeholder (what t.co and the slug used to be) as an organisation
    assert _tagged(text, {URL_WORD: "B-ORG", "JPMorgan": "B-ORG"}) == [("ORG", "JPMorgan")]
    # an open entity stops at a placeholder: "Meat" does not run into the link
    assert _tagged(text, {"Beyond": "B-ORG", "Meat": "I-ORG", URL_WORD: "I-ORG"}) == [("ORG", "Beyond Meat")]
    assert _tagged(TWEETS[1], {USER_WORD: "B-ORG"}) == []


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"Credit": "B-ORG", "Suisse": "I-ORG"}, [("ORG", "Credit Suisse")]),
        # a small model's second B on the next word continues the name
        ({"Credit": "B-ORG", "Suisse": "B-ORG"}, [("ORG", "Credit Suisse")]),
        # an I without a B starts the entity (lenient, like seqeval)
        ({"Credit": "I-ORG", "Suisse": "I-ORG"}, [("ORG", "Credit Suisse")]),
        ({"Credit": "I-ORG", "Suisse": "B-ORG", "Group": "I-ORG", "AG": "B-ORG"}, [("ORG", "Credit Suisse Group AG")]),
        # another type is another entity
        ({"Credit": "B-ORG", "Suisse": "B-LOC"}, [("ORG", "Credit"), ("LOC", "Suisse")]),
    ],
)
def test_multi_word_organisations_are_kept_whole(tags: dict[str, str], expected: list[tuple[str, str]]) -> None:
    assert _tagged("Credit Suisse Group AG shares fell https://t.co/x via @Reuters", tags) == expected


def test_names_split_by_punctuation_or_words_stay_apart() -> None:
    text = "Apple, Microsoft and Alphabet"
    assert _tagged(text, {"Apple": "B-ORG", "Microsoft": "B-ORG", "Alphabet": "B-ORG"}) == [
        ("ORG", "Apple"),
        ("ORG", "Microsoft"),
        ("ORG", "Alphabet"),
    ]


def test_inner_text_is_the_original() -> None:
    text = "Goldman  Sachs\tGroup rose"
    assert _tagged(text, {"Goldman": "B-ORG", "Sachs": "I-ORG", "Group": "I-ORG"}) == [("ORG", "Goldman  Sachs\tGroup")]


@given(TEXTS, st.lists(st.sampled_from(["O", "B-ORG", "I-ORG", "B-PER", "I-LOC"]), min_size=40, max_size=40))
def test_no_link_fragment_is_ever_an_entity(text: str, tags: list[str]) -> None:
    """Whatever the per-word tags, no decoded span overlaps a link or handle, and every surface slices."""
    words = split_words(text)
    spans = spans_from_tags(words, tags[: len(words)], None, text)
    replaced = find_spans(text)
    for span in spans:
        assert text[span["start"] : span["end"]] == span["text"]
        assert not any(r.start < span["end"] and span["start"] < r.end for r in replaced)


@given(st.text(max_size=60))
def test_any_text_normalises_and_maps_back(text: str) -> None:
    norm = normalise(text)
    assert normalise(norm.text).text == norm.text
    assert norm.to_original(0, len(norm.text)) == (0, len(text))
    for word in split_words(text):
        assert 0 <= word.start < word.end <= len(text)
