"""Static group membership options (no broker)."""

from __future__ import annotations

import socket

from textpulse.kafka.broker import consumer_options, group_instance_id
from textpulse.settings import KafkaSettings


def test_no_instance_id_means_dynamic_membership() -> None:
    assert group_instance_id(KafkaSettings()) is None
    assert "group_instance_id" not in consumer_options(KafkaSettings(), group_id="g")


def test_instance_id_from_settings_with_hostname_and_a_suffix_per_extra_consumer() -> None:
    kafka = KafkaSettings(group_instance_id="{hostname}-classify")
    assert group_instance_id(kafka) == f"{socket.gethostname()}-classify"
    assert group_instance_id(kafka, nth=2) == f"{socket.gethostname()}-classify-2"
    opts = consumer_options(kafka, group_id="g", instance_id=group_instance_id(kafka))
    assert opts["group_instance_id"] == f"{socket.gethostname()}-classify"
    # A restart within the session keeps the partitions; heartbeats several times per session.
    assert (opts["session_timeout_ms"], opts["heartbeat_interval_ms"]) == (30_000, 1_000)


def test_dynamic_member_session_is_short_enough_for_a_restart_unless_set() -> None:
    # A SIGKILLed dynamic member's successor waits out the session: 8 s keeps a restart under the
    # 10 s target and the JoinGroup under the 15 s request timeout (issue #22).
    opts = consumer_options(KafkaSettings(), group_id="g")
    assert (opts["session_timeout_ms"], opts["heartbeat_interval_ms"]) == (8_000, 1_000)
    opts = consumer_options(KafkaSettings(session_timeout_ms=20_000), group_id="g")
    assert opts["session_timeout_ms"] == 20_000


def test_tansu_has_no_static_membership() -> None:
    assert group_instance_id(KafkaSettings(flavor="tansu", group_instance_id="a")) is None
