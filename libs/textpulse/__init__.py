"""textpulse: shared core of the platform (event contracts, Kafka wiring, observability, ML toolkit)."""

__version__ = "0.1.0"
