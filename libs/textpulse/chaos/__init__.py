"""Chaos harness: the local stack under SIGKILL, with loss/duplicate verification, and sustained load.

``textpulse chaos run`` (``make chaos``) starts Apache Kafka, Triton, Elasticsearch, Prometheus and
every service on ports of its own, replays real events at a steady rate, kills each component with
SIGKILL at seeded random times and restarts it, then verifies every output topic and Elasticsearch.
``textpulse chaos load`` (``make chaos-load``) holds a steady rate and checks that consumer lag and
service memory stay flat. See ``docs/chaos.md``.
"""
