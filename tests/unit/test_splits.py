"""Leak-free dev splits: near-duplicates (URL, handle, number, case variants) stay on one side."""

from __future__ import annotations

import pytest
from textpulse.datasets import TextExample, TokenExample, dev_split, load_text_examples
from textpulse.datasets.splits import cross_split_twins, near_duplicate_key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Tesla beats estimates https://t.co/AbC123", "Tesla beats estimates https://t.co/zzZ999"),
        ("Tesla beats estimates http://t.co/AbC", "tesla  beats ESTIMATES"),
        ("$AAPL up 3% today", "$aapl up 5.5% today"),
        ("@jim says buy $TSLA", "@someone_else says buy $tsla"),
        ("Revenue rose to 1,200 million", "Revenue rose to 950 million"),
        ("Shares slide after downgrade…", "Shares slide after downgrade..."),
        ("Cut at Credit Suisse www.example.com/a/b", "Cut at Credit Suisse www.other.org"),
    ],
)
def test_near_duplicates_share_a_key(a: str, b: str) -> None:
    assert near_duplicate_key(a) == near_duplicate_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Tesla beats estimates", "Tesla misses estimates"),
        ("$AAPL up 3%", "$MSFT up 3%"),
        ("Buy Sands, Wells Fargo says", "Sell Sands, Wells Fargo says"),
    ],
)
def test_different_texts_keep_different_keys(a: str, b: str) -> None:
    assert near_duplicate_key(a) != near_duplicate_key(b)


def test_twins_land_on_one_side_and_split_stays_deterministic() -> None:
    # 40 stories (told apart by a word, not a number: numbers are folded), each reposted 10 times
    words = [f"{chr(97 + g // 26)}{chr(97 + g % 26)}" for g in range(40)]
    examples = [
        TextExample(str(i), f"story {words[i % 40]} about $ABC up {i}% https://t.co/{i}", "a" if i % 40 < 25 else "b")
        for i in range(400)
    ]
    train, dev = dev_split(examples, fraction=0.2, seed=13)
    assert cross_split_twins(train, dev) == []
    assert len(train) + len(dev) == len(examples)
    assert {e.label for e in dev} == {"a", "b"}
    # 40 groups of 10 twins: 20 % of the groups per label, whole groups only
    assert len(dev) % 10 == 0
    assert len(dev) == 80
    again = dev_split(examples, fraction=0.2, seed=13)
    assert [e.id for e in again[1]] == [e.id for e in dev]


def test_token_examples_group_by_joined_tokens() -> None:
    examples = [TokenExample(str(i), ["Apple", "rose", str(i), "%"], ["B-ORG", "O", "O", "O"]) for i in range(30)]
    examples += [TokenExample(f"x{i}", ["Other", chr(97 + i % 26) * 2], ["O", "O"]) for i in range(26)]
    train, dev = dev_split(examples, fraction=0.3, seed=1, stratify=False)
    assert cross_split_twins(train, dev) == []
    apple_sides = {e in dev for e in examples[:30]}
    assert len(apple_sides) == 1


@pytest.mark.parametrize("path", ["twitter_fin_topic/topic_train.csv", "twitter_fin_sentiment/sent_train.csv"])
def test_no_cross_split_twins_on_the_tweet_training_files(path: str) -> None:
    # The task presets' defaults: 10 % dev, seed 13 (ml/config.py).
    examples = load_text_examples(path)
    train, dev = dev_split(examples, fraction=0.1, seed=13)
    assert cross_split_twins(train, dev) == []
    assert 0.08 < len(dev) / len(examples) < 0.12
