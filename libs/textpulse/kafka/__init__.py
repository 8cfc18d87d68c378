"""Kafka wiring: broker factory, dead-letter helper, admin, embedded broker."""

from .broker import CONSUMER_ACK_POLICY, consumer_options, make_broker, producer_options
from .dlq import DeadLetters, dlq_headers

__all__ = ["CONSUMER_ACK_POLICY", "DeadLetters", "consumer_options", "dlq_headers", "make_broker", "producer_options"]
