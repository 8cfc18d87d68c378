"""Chaos harness: the local stack under SIGKILL, with loss/duplicate verification, and sustained load.

``python -m tests.chaos.harness run`` (``make chaos``) starts Apache Kafka, Triton, Elasticsearch, Prometheus and
every service on ports of its own, replays real events at a steady rate, kills each component with
SIGKILL at seeded random times and restarts it, then verifies every output topic and Elasticsearch.
``python -m tests.chaos.harness load`` (``make chaos-load``) holds a steady rate and checks that consumer lag and
service memory stay flat. See ``docs/chaos.md``.

Test tooling, not product: it lives under ``tests/`` so the wheel and the images never carry it
(issue #24; ``tests/unit/test_package_boundaries.py``).
"""
