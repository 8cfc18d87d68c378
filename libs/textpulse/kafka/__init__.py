"""Kafka wiring: broker factory, dead-letter helper, admin, embedded broker."""

from . import offset_fetch
from .broker import CONSUMER_ACK_POLICY, consumer_options, make_broker, producer_options
from .dlq import DeadLetters, dlq_headers

# Before any consumer starts: aiokafka 0.14 reads an OffsetFetch group error as "nothing committed".
offset_fetch.install()

__all__ = ["CONSUMER_ACK_POLICY", "DeadLetters", "consumer_options", "dlq_headers", "make_broker", "producer_options"]
