"""Label vocabularies of the staged data sets, in label-id order.

Ids matter: the classifier head's row ``i`` is ``label_names(dataset)[i]``, so
the order is fixed here once (from each data set's card) rather than inferred
from whatever labels a file happens to contain.
"""

from __future__ import annotations

import json

from textpulse.datasets.settings import data_dir

SENTIMENT_LABELS = ["Bearish", "Bullish", "Neutral"]

#: Id order from the dataset card. ``topic_dataset_meta.txt`` lists the same topics
#: alphabetically with slightly different names, so it must NOT be used for ids.
TOPIC_LABELS = [
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
]

PHRASEBANK_LABELS = ["negative", "neutral", "positive"]

FINER_ORD_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]

_WNUT_TYPES = ["person", "location", "corporation", "product", "creative-work", "group"]
WNUT17_TAGS = ["O"] + [f"{p}-{t}" for t in _WNUT_TYPES for p in ("B", "I")]

OOS_LABEL = "oos"

TOKEN_DATASETS = frozenset({"finer_ord", "wnut17"})


def base_name(dataset: str) -> str:
    """Strip a ``:split`` suffix (``clinc150:train`` -> ``clinc150``)."""
    return dataset.split(":", 1)[0]


def label_names(dataset: str) -> list[str]:
    """Return the label names of a known data set in id order.

    Banking77 and CLINC150 read their vocabularies from the staged files
    (``categories.json``, ``domains.json``) so the list always matches the data.
    """
    name = base_name(dataset)
    fixed = {
        "twitter_fin_sentiment": SENTIMENT_LABELS,
        "twitter_fin_topic": TOPIC_LABELS,
        "fin_phrasebank": PHRASEBANK_LABELS,
        "finer_ord": FINER_ORD_TAGS,
        "wnut17": WNUT17_TAGS,
    }
    if name in fixed:
        return list(fixed[name])
    if name == "banking77":
        categories = json.loads((data_dir() / "banking77" / "categories.json").read_text("utf-8"))
        return [str(c) for c in categories]
    if name == "clinc150":
        domains = json.loads((data_dir() / "clinc150" / "domains.json").read_text("utf-8"))
        intents = [str(i) for names in domains.values() for i in names]
        return [*intents, OOS_LABEL]
    msg = f"unknown data set {dataset!r}; known: {sorted([*fixed, 'banking77', 'clinc150'])}"
    raise KeyError(msg)
