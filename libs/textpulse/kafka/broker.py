"""FastStream + aiokafka wiring with defaults that do not lose data.

Producer: ``acks=all``, idempotence where the broker implements it, lz4
compression, a short linger to fill batches. Consumers: never auto-commit; a
batch is committed only after its handler returned, i.e. after every output
record was acknowledged by the broker (``AckPolicy.NACK_ON_ERROR``: success →
commit, unexpected exception → seek back and redeliver). ``AckPolicy.ACK`` is
not used because it commits even when the handler raised.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from tenacity import AsyncRetrying, retry_if_not_exception_type, stop_after_delay, wait_exponential

from textpulse.contracts.services import consumer_group
from textpulse.kafka.auth import KafkaAuthError, broker_connection, check_auth
from textpulse.observability import tracing
from textpulse.observability.metrics import ServiceMetrics
from textpulse.observability.progress import AssignmentListener
from textpulse.settings import KafkaSettings, ssl_context

CONSUMER_ACK_POLICY = AckPolicy.NACK_ON_ERROR
log = logging.getLogger(__name__)
#: (broker, group) -> subscribers registered so far: the n-th gets the n-th static member id.
_SUBSCRIBERS: dict[tuple[int, str], int] = {}


def security(settings: KafkaSettings) -> BaseSecurity | None:
    """FastStream security object for the configured protocol."""
    ctx = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        assert settings.sasl_username  # checked by KafkaSettings
        assert settings.sasl_password
        user, password = settings.sasl_username, settings.sasl_password.get_secret_value()
        cls = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[
            settings.sasl_mechanism or "PLAIN"
        ]
        return cls(user, password, ssl_context=ctx, use_ssl=ctx is not None)
    if ctx is not None:
        return BaseSecurity(ssl_context=ctx, use_ssl=True)
    return None


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka producer options shared by FastStream brokers and raw producers."""
    return {
        "acks": "all",
        "enable_idempotence": settings.use_idempotence,
        "compression_type": None if settings.compression == "none" else settings.compression,
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_bytes,
        "max_request_size": settings.max_request_bytes,
        "request_timeout_ms": settings.request_timeout_ms,
    }


def make_broker(
    settings: KafkaSettings,
    *,
    service: str,
    metrics: ServiceMetrics | None = None,
    middlewares: Sequence[Any] = (),
    faststream_metrics: bool = False,
) -> KafkaBroker:
    """A KafkaBroker for ``service`` with the platform's producer defaults.

    FastStream's own Prometheus middleware is off by default: it records every
    published message (measured ~25 µs/record here, more than the rest of the
    ingest path), while the platform's ``textpulse_*`` metrics are per batch.
    """
    # Tracing first (outermost): the consume span then covers the other middlewares too. None when off.
    mws: list[Any] = [*tracing.broker_middlewares(service), *middlewares]
    if metrics is not None and faststream_metrics:
        mws.append(KafkaPrometheusMiddleware(registry=metrics.registry, app_name=service))
    return KafkaBroker(
        settings.bootstrap_servers.split(","),
        client_id=f"textpulse-{service}",
        security=security(settings),
        middlewares=mws,
        ack_policy=CONSUMER_ACK_POLICY,
        # Our own logger: FastStream otherwise installs a handler with its own (non-JSON) format.
        logger=logging.getLogger(f"textpulse.{service}.faststream"),
        **producer_options(settings),
    )


#: Session timeout of a dynamic consumer on Apache Kafka unless ``TEXTPULSE_KAFKA_SESSION_TIMEOUT_MS`` says
#: otherwise (issue #22). A SIGKILLed dynamic member's restarted successor cannot get its partitions
#: before the coordinator expires the dead member, so a restart resumes after about this long minus the
#: time the process was down (tests/integration/test_static_membership.py, restart 1 s after the kill:
#: 4.3 s at 6 s, 6.2 s at 8 s, 9.0 s at 10 s, 28.3 s at 30 s): 8 s leaves room under the 10 s target.
#: Not the broker's 6 s minimum (``group.min.session.timeout.ms``): a broker with a raised minimum
#: would refuse the join, and an event loop stalled for a few seconds (a busy host) should not expire
#: the member. A broker outage longer than the session expires the members and costs one rebalance
#: when it returns; it cannot duplicate exactly-once output (the runner re-checks every assignment,
#: :mod:`.transactions`). The 30 s used before made the JoinGroup outlive the 15 s request timeout,
#: which aiokafka logs at ERROR (``marking coordinator dead``); 8 s stays well under it.
APACHE_SESSION_TIMEOUT_MS = 8_000
#: Session timeout of a static member (``group_instance_id``): how long a dead member's partitions
#: wait for it. Long enough to cover a restart with model loading, which then takes its partitions
#: back without a rebalance (first output 0.6-1.7 s after the restart in the same test).
APACHE_STATIC_SESSION_TIMEOUT_MS = 30_000
#: Heartbeat interval: a member learns of a rebalance (someone joined) from its next heartbeat, so a
#: short interval shortens every rebalance a restart causes; one small request a second per consumer.
HEARTBEAT_INTERVAL_MS = 1_000


def group_instance_id(settings: KafkaSettings, *, nth: int = 1) -> str | None:
    """The static member id of this replica's ``nth`` consumer of a group (None: dynamic membership).

    From ``TEXTPULSE_KAFKA_GROUP_INSTANCE_ID`` (``{hostname}`` expanded). The id must stay the
    same across restarts of a replica and differ between replicas: a pod name does both (a
    container restarted after ``kill -9`` keeps its pod); two live consumers with one id fence
    each other (``FencedInstanceIdError``). A second consumer of the same group in one process
    gets ``-<nth>`` appended. Tansu has no static membership.
    """
    if not settings.group_instance_id or settings.flavor != "apache":
        return None
    base = settings.group_instance_id.replace("{hostname}", socket.gethostname())
    return base if nth == 1 else f"{base}-{nth}"


def consumer_options(
    settings: KafkaSettings, *, group_id: str, exactly_once: bool = False, instance_id: str | None = None
) -> dict[str, Any]:
    """Subscriber options: a committed group that starts from the beginning of a new topic.

    Always ``read_committed``: records of aborted transactions (an exactly-once upstream
    that failed mid-batch) must never be processed; on non-transactional topics it reads
    exactly what ``read_uncommitted`` would. ``exactly_once``: offsets are committed inside
    the producer's transaction (:mod:`.transactions`), never by the consumer, so FastStream
    must neither commit nor seek (``AckPolicy.MANUAL``).

    Membership: by default a dynamic member with an 8 s session
    (:data:`APACHE_SESSION_TIMEOUT_MS`): a SIGKILLed member's restarted successor waits until the
    coordinator gives up on the dead member, i.e. at most the session. A static member
    (``instance_id`` from :func:`group_instance_id`; deployments with a stable replica id set it)
    keeps its partitions for :data:`APACHE_STATIC_SESSION_TIMEOUT_MS` and, restarted within it,
    gets them back without a rebalance. Heartbeats run in aiokafka's background task every second
    (at most a third of the session).
    """
    apache_ms = APACHE_SESSION_TIMEOUT_MS if instance_id is None else APACHE_STATIC_SESSION_TIMEOUT_MS
    session_ms = settings.session_timeout_ms or (apache_ms if settings.flavor == "apache" else 10_000)
    opts: dict[str, Any] = {
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.MANUAL if exactly_once else CONSUMER_ACK_POLICY,
        "isolation_level": "read_committed",
        "max_poll_interval_ms": 300_000,
        "session_timeout_ms": session_ms,
        "heartbeat_interval_ms": min(HEARTBEAT_INTERVAL_MS, session_ms // 3),
    }
    if instance_id is not None:
        opts["group_instance_id"] = instance_id
    return opts


async def raw_decoder(msg: Any) -> Any:
    """Decoder that never parses: handlers read record bytes themselves.

    FastStream's default decoder JSON-parses values with an ``application/json``
    content type *before* the handler runs; a malformed record would then fail
    outside the handler, be nacked and redelivered forever instead of reaching
    the dead-letter topic.
    """
    raw = msg.raw_message
    if isinstance(raw, list | tuple):
        return [r.value for r in raw]
    return raw.value


class BatchConsumerSettings(Protocol):
    """The settings a batch consumer reads (every consuming service's settings class has them)."""

    kafka: KafkaSettings
    group_id: str | None
    kafka_batch_records: int
    kafka_batch_timeout_ms: int

    @property
    def delivery(self) -> str:
        """``at_least_once`` or ``exactly_once`` (read-only here, so a ``Literal`` field matches)."""
        ...


def batch_subscriber(
    broker: KafkaBroker,
    *topics: str,
    settings: BatchConsumerSettings,
    service: str,
    title: str,
    description: str,
    group_id: str | None = None,
    listener: ConsumerRebalanceListener | None = None,
) -> Any:
    """The platform's consumer: one poll is one batch of raw records, committed after the handler returned.

    Group ``group_id``, else the settings', else ``textpulse-<service>``; ``raw_decoder`` so
    the handler sees every record's bytes (and can dead-letter the bad ones). ``listener`` is
    told of partition revocations and assignments (e.g. to restore per-partition state). With
    ``settings.delivery == "exactly_once"`` the handler must run the batch through
    :class:`~textpulse.kafka.transactions.ExactlyOnce` (see :func:`~textpulse.kafka.transactions.batch_runner`).
    With ``TEXTPULSE_KAFKA_GROUP_INSTANCE_ID`` set the consumer is a static member
    (:func:`group_instance_id`, :func:`consumer_options`).
    """
    group = group_id or consumer_group(service, settings.group_id)
    key = (id(broker), group)
    _SUBSCRIBERS[key] = nth = _SUBSCRIBERS.get(key, 0) + 1
    instance_id = group_instance_id(settings.kafka, nth=nth)
    if instance_id is not None:
        log.info("static group member", extra={"group": group, "group_instance_id": instance_id})
    return broker.subscriber(
        *topics,
        batch=True,
        max_records=settings.kafka_batch_records,
        batch_timeout_ms=settings.kafka_batch_timeout_ms,
        decoder=raw_decoder,
        title=title,
        description=description,
        # Every consumer reports its assignment, so /ready judges only the partitions this process holds.
        listener=AssignmentListener(group, listener),
        **consumer_options(
            settings.kafka, group_id=group, exactly_once=settings.delivery == "exactly_once", instance_id=instance_id
        ),
    )


def batch_records(raw: Any) -> tuple[Any, ...]:
    """The consumer records of a (batch) message, as a tuple."""
    return tuple(raw) if isinstance(raw, list | tuple) else (raw,)


async def start_with_retry(broker: KafkaBroker, timeout_s: float) -> None:
    """Start the broker, retrying with backoff while Kafka is still coming up; re-raise after ``timeout_s``.

    A refused login (wrong SASL password, untrusted certificate) is not retried: it raises
    :class:`~textpulse.kafka.auth.KafkaAuthError` naming the cause at the first failed attempt.
    """
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_exponential(multiplier=0.2, max=5),
        retry=retry_if_not_exception_type(KafkaAuthError),
        reraise=True,
    ):
        with attempt:
            try:
                await broker.start()
            except Exception:
                connection = broker_connection(broker)
                if connection is not None:
                    await check_auth(connection)
                raise
