"""Why a record was dead-lettered: the one category vocabulary of every service.

The category is what an operator groups and alerts on (the ``reason`` label of
``textpulse_dlq_messages_total`` and the ``x-dlq-category`` header); the free-text detail
(``x-dlq-reason``: the shared error vocabulary's ``code at field: sentence`` items, or the
last error) says which record went wrong and how. A small closed set keeps the metric's label
values bounded and the same across services: ``invalid_record`` means the same thing in
ingest as in alert.
"""

from __future__ import annotations

from enum import StrEnum


class DeadLetterReason(StrEnum):
    """The category of a dead letter (stable: dashboards, alerts and re-drive filters use it)."""

    #: The record is not a valid input of the topic's contract: empty, not UTF-8/JSON, wrong shape
    #: or fields, an unsupported schema version, a tombstone the service cannot apply.
    INVALID_RECORD = "invalid_record"
    #: The inference backend refused this input (e.g. a text it cannot tokenise); others pass.
    MODEL_REJECTED = "model_rejected"
    #: The output store (Elasticsearch) refused the document built from this record.
    STORE_REJECTED = "store_rejected"
    #: The record failed ``dlq_max_attempts`` times alone (``DeadLetters.guard``).
    RETRIES_EXHAUSTED = "retries_exhausted"
