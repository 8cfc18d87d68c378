"""AsyncAPI 3.0 documents of the services, with the real payload of every message.

FastStream documents a subscriber's payload from its handler's parameters. The platform's
consumers take raw records (``raw_decoder``: a bad record is dead-lettered by the service,
not rejected inside the framework), so FastStream alone writes an empty payload for every
received message. The value contract of a topic is declared once, in
:mod:`textpulse.contracts.topics`; :func:`complete` puts it into every channel of that topic,
received or sent, with the record key, and documents a dead letter as what it is: the
original bytes plus the ``x-dlq-*`` headers of :mod:`textpulse.kafka.dlq`. A topic without a
declared contract keeps the payload its publisher declared (``schema=``); a channel left with
no payload at all is an error, so a new topic cannot slip into the documents undocumented.

Not imported by :mod:`textpulse.contracts` (it imports FastStream and the DLQ helper).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.errors import ErrorCode
from textpulse.contracts.topics import TopicSpec, by_name
from textpulse.kafka import dlq as dlq_headers

REF = "#/components/schemas/"
DLQ_PREFIX = "dlq."
#: Binding version of the Kafka message binding (``key``), as FastStream's channel bindings.
KAFKA_BINDING_VERSION = "0.4.0"

#: Every ``x-dlq-*`` header a dead letter may carry, with its meaning (a test keeps this in step
#: with the ``H_*`` constants of :mod:`textpulse.kafka.dlq`).
DEAD_LETTER_HEADERS: dict[str, str] = {
    dlq_headers.H_REASON: (
        "Why the record was dead-lettered: '<code> at <field>: <sentence>' items of the shared error "
        "vocabulary joined by '; ', or 'retries exhausted …' with the last error. Never echoes the input."
    ),
    dlq_headers.H_EXC_TYPE: "Exception class behind the reason; empty when the record itself was invalid.",
    dlq_headers.H_SOURCE_TOPIC: "Topic the original record was read from.",
    dlq_headers.H_SOURCE_PARTITION: "Partition of the original record.",
    dlq_headers.H_SOURCE_OFFSET: "Offset of the original record (the full original stays there until retention).",
    dlq_headers.H_TIME: "When the record was dead-lettered (ISO 8601, UTC).",
    dlq_headers.H_SERVICE: "Service that dead-lettered the record.",
    dlq_headers.H_CATEGORY: (
        "Category of the reason (textpulse.contracts.dead_letters.DeadLetterReason), the reason label of "
        "textpulse_dlq_messages_total."
    ),
    dlq_headers.H_CODE: (
        "Error code of the first mistake, as in the HTTP problem body's errors list ('retries_exhausted' "
        "after the retry limit); absent when the reason has no code (e.g. rejected by Elasticsearch)."
    ),
    dlq_headers.H_FIELD: "Dotted path of the first mistake's field ('' = the whole value); with x-dlq-code.",
    dlq_headers.H_ATTEMPTS: "Times the record failed before it was dead-lettered ('retries exhausted' only).",
    dlq_headers.H_TRUNCATED: "'true' when the value is a prefix of the original, cut to fit the DLQ topic's limit.",
    dlq_headers.H_ORIGINAL_SIZE: "Size in bytes of the original value (truncated copies only).",
    dlq_headers.H_ORIGINAL_SHA256: "SHA-256 (hex) of the original value (truncated copies only).",
    dlq_headers.H_HEADERS_DROPPED: "Number of original headers dropped to fit (truncated copies only).",
    dlq_headers.H_KEY_SIZE: "Size in bytes of the original key, when the key was dropped to fit.",
    dlq_headers.H_KEY_SHA256: "SHA-256 (hex) of the original key, when the key was dropped to fit.",
}
#: Headers present on every dead letter.
REQUIRED_DEAD_LETTER_HEADERS = (
    dlq_headers.H_REASON,
    dlq_headers.H_EXC_TYPE,
    dlq_headers.H_SOURCE_TOPIC,
    dlq_headers.H_SOURCE_PARTITION,
    dlq_headers.H_SOURCE_OFFSET,
    dlq_headers.H_TIME,
    dlq_headers.H_SERVICE,
)
_FORMATS: dict[str, dict[str, Any]] = {
    dlq_headers.H_SOURCE_PARTITION: {"pattern": "^[0-9]+$"},
    dlq_headers.H_SOURCE_OFFSET: {"pattern": "^[0-9]+$"},
    dlq_headers.H_TIME: {"format": "date-time"},
    dlq_headers.H_CODE: {"enum": [code.value for code in ErrorCode]},
    dlq_headers.H_CATEGORY: {"enum": [reason.value for reason in DeadLetterReason]},
    dlq_headers.H_ATTEMPTS: {"pattern": "^[0-9]+$"},
    dlq_headers.H_TRUNCATED: {"const": "true"},
    dlq_headers.H_ORIGINAL_SIZE: {"pattern": "^[0-9]+$"},
    dlq_headers.H_ORIGINAL_SHA256: {"pattern": "^[0-9a-f]{64}$"},
    dlq_headers.H_HEADERS_DROPPED: {"pattern": "^[0-9]+$"},
    dlq_headers.H_KEY_SIZE: {"pattern": "^[0-9]+$"},
    dlq_headers.H_KEY_SHA256: {"pattern": "^[0-9a-f]{64}$"},
}


def dead_letter_headers_schema() -> dict[str, Any]:
    """JSON schema of a dead letter's headers: the ``x-dlq-*`` set plus the original record's headers."""
    return {
        "title": "DeadLetterHeaders",
        "description": (
            "Record headers of a dead letter. The original record's headers (other than x-dlq-*) are "
            "copied with control characters replaced; the x-dlq-* headers say why and where from."
        ),
        "type": "object",
        "properties": {
            name: {"type": "string", "description": text, **_FORMATS.get(name, {})}
            for name, text in DEAD_LETTER_HEADERS.items()
        },
        "required": list(REQUIRED_DEAD_LETTER_HEADERS),
        "additionalProperties": {"type": "string", "description": "A header of the original record."},
    }


DEAD_LETTER_VALUE: dict[str, Any] = {
    "title": "DeadLetterValue",
    "description": (
        "The original record value, byte for byte (it may be neither UTF-8 nor JSON: that is often why it "
        "is here); a prefix of it when x-dlq-truncated is 'true'. The record key is the original key."
    ),
    "type": "string",
    "format": "binary",
}


def document(broker: Any, *, title: str, version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``broker``'s subscribers and publishers, payloads filled in."""
    from faststream.specification import AsyncAPI

    spec = AsyncAPI(broker, title=title, version=version, schema_version="3.0.0")
    doc: dict[str, Any] = json.loads(spec.to_specification().to_json())
    complete(doc)
    return doc


def topic_spec(topic: str) -> TopicSpec | None:
    """The declared topic of a channel address (None: not declared in :mod:`textpulse.contracts.topics`)."""
    try:
        return by_name(topic)
    except KeyError:
        return None


def complete(doc: dict[str, Any]) -> None:
    """Fill every message of ``doc`` with its topic's payload (and key); dead letters get their headers."""
    components = doc.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    messages: dict[str, Any] = components.setdefault("messages", {})
    for name, channel in doc.get("channels", {}).items():
        topic: str = channel["address"]
        spec = topic_spec(topic)
        for ref in channel.get("messages", {}).values():
            message = messages[ref["$ref"].rsplit("/", 1)[-1]]
            if topic.startswith(DLQ_PREFIX):
                message["contentType"] = "application/octet-stream"
                message["payload"] = {"$ref": _add(schemas, "DeadLetterValue", DEAD_LETTER_VALUE)}
                message["headers"] = {"$ref": _add(schemas, "DeadLetterHeaders", dead_letter_headers_schema())}
            elif spec is not None and spec.value is not None:
                message["payload"] = {"$ref": add_model(schemas, spec.value)}
            elif _untyped(schemas, message.get("payload")):
                msg = (
                    f"channel {name!r}: no payload for topic {topic!r}; declare its value model in "
                    "textpulse.contracts.topics or pass schema= to its publisher"
                )
                raise ValueError(msg)
            if spec is not None:
                message["bindings"] = {
                    "kafka": {
                        "key": {"type": "string", "description": spec.key},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                }
    _drop_unreferenced(doc)


def add_model(schemas: dict[str, Any], model: type[BaseModel]) -> str:
    """Put ``model``'s JSON schema (and its definitions) into ``schemas``; return the reference."""
    schema = model.model_json_schema(ref_template=REF + "{model}")
    for def_name, definition in schema.pop("$defs", {}).items():
        _add(schemas, def_name, definition)
    return _add(schemas, model.__name__, schema)


def _add(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> str:
    if name in schemas and schemas[name] != schema:
        msg = f"two different schemas are both named {name!r} in one AsyncAPI document"
        raise ValueError(msg)
    schemas[name] = schema
    return REF + name


def _untyped(schemas: dict[str, Any], payload: Any) -> bool:
    """FastStream's placeholder: no payload, ``EmptyPayload`` (type null) or a schema with only a title."""
    if not isinstance(payload, dict):
        return True
    ref = payload.get("$ref")
    schema = schemas.get(ref.removeprefix(REF), {}) if isinstance(ref, str) else payload
    return schema.get("type") == "null" or not set(schema) - {"title"}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(REF):
                yield value.removeprefix(REF)
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _drop_unreferenced(doc: dict[str, Any]) -> None:
    """Remove the placeholders the filled-in payloads replaced (and anything else no one references)."""
    schemas: dict[str, Any] = doc["components"]["schemas"]
    outside = {k: v for k, v in doc.items() if k != "components"}
    todo = [outside, {k: v for k, v in doc["components"].items() if k != "schemas"}]
    used: set[str] = set()
    while todo:
        for name in _refs(todo.pop()):
            if name in schemas and name not in used:
                used.add(name)
                todo.append(schemas[name])
    doc["components"]["schemas"] = {k: v for k, v in schemas.items() if k in used}
