"""Kafka with SASL/SCRAM over TLS: the deploy script's secured broker, a real service on it, refused logins.

The broker is started by ``KAFKA_SECURITY=sasl_ssl deploy/kafka/start.sh`` (127.0.0.1:9192,
run dir ``.run/kafka-sasl``: test CA, broker keystore, SCRAM users) and stopped at the end
by ``stop.sh`` (which signals the PID in the run dir) if this session started it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.kafka import make_broker
from textpulse.kafka.admin import client_options, create_topics, wait_for_broker
from textpulse.kafka.auth import KafkaAuthError
from textpulse.kafka.broker import start_with_retry
from textpulse.observability.apikey import ApiSecuritySettings
from textpulse.settings import KafkaSettings

from services.ingest.app import create_app
from services.ingest.core import H_EVENT_ID
from services.ingest.settings import IngestSettings
from tests.conftest import REPO, TEST_TOPICS, missing, port_open
from tests.helpers import headers, read_all, running
from tests.ingest_cases import JSON, ev, js

# The first test also pays for the broker's first start (certificates, format: ~1 min on a busy 2-core machine).
pytestmark = [pytest.mark.security, pytest.mark.kafka, pytest.mark.timeout(300)]

SASL_PORT = int(os.environ.get("KAFKA_SASL_PORT", "9192"))
RUN_DIR = REPO / ".run" / "kafka-sasl"
SCRIPT_ENV = {
    **os.environ,
    "KAFKA_SECURITY": "sasl_ssl",
    "KAFKA_PORT": str(SASL_PORT),
    "KAFKA_CONTROLLER_PORT": str(SASL_PORT + 1),
    "KAFKA_RUN_DIR": str(RUN_DIR),
    # The tests do not read broker metrics; one agent fewer on a shared machine.
    "KAFKA_JMX_EXPORTER": "0",
    "KAFKA_START_TIMEOUT": "150",
}


def read_client_env(path: Path) -> KafkaSettings:
    """KafkaSettings from the ``TEXTPULSE_KAFKA_*`` lines start.sh writes for clients."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.removeprefix("TEXTPULSE_KAFKA_").lower()] = value
    return KafkaSettings.model_validate({**values, "flavor": "apache"})


@pytest.fixture(scope="session")
def sasl_kafka() -> Iterator[KafkaSettings]:
    started = False
    if not port_open(SASL_PORT):
        proc = subprocess.run(
            ["bash", str(REPO / "deploy" / "kafka" / "start.sh")],
            env=SCRIPT_ENV,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            missing("SASL_SSL Kafka", f"KAFKA_SECURITY=sasl_ssl deploy/kafka/start.sh failed: {proc.stderr[-3000:]}")
        started = True
    client_env = RUN_DIR / "client.env"
    if not client_env.exists():
        missing("SASL_SSL Kafka", f"port {SASL_PORT} is open but {client_env} is absent (not our broker)")
    settings = read_client_env(client_env)
    asyncio.run(wait_for_broker(settings, 90))
    yield settings
    # This broker keeps its data between runs: the session's test topics go before it stops.
    asyncio.run(TEST_TOPICS.cleanup(settings))
    if started:
        subprocess.run(["bash", str(REPO / "deploy" / "kafka" / "stop.sh")], env=SCRIPT_ENV, timeout=120, check=False)


def test_deploy_files_are_private_and_certificate_matches(sasl_kafka: KafkaSettings) -> None:
    """Keys, passwords and the rendered config are readable by their owner only; the cert names 127.0.0.1."""
    for name in (
        "credentials.env",
        "client.env",
        "server.properties",
        "tls/broker.key",
        "tls/ca.key",
        "tls/broker.p12",
    ):
        mode = (RUN_DIR / name).stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{name} is {oct(mode)}"
    assert sasl_kafka.ssl_cafile is not None
    ctx = ssl.create_default_context(cafile=str(sasl_kafka.ssl_cafile))
    with ssl_socket(ctx) as tls:
        assert tls.version() in {"TLSv1.3", "TLSv1.2"}
    assert "listeners=SASL_SSL://127.0.0.1" in (RUN_DIR / "server.properties").read_text()


def ssl_socket(ctx: ssl.SSLContext) -> ssl.SSLSocket:
    import socket

    raw = socket.create_connection(("127.0.0.1", SASL_PORT), timeout=10)
    # Hostname check on: the certificate's SAN must name IP 127.0.0.1.
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


async def test_ingest_end_to_end_over_sasl_ssl(sasl_kafka: KafkaSettings) -> None:
    """Topics created with credentials; ingest (HTTP with an API key, and text.in) writes text.raw and its DLQ."""
    tag = uuid.uuid4().hex[:8]
    prefix = TEST_TOPICS.track(f"t.sasl-{tag}.")
    names = {spec.name: f"{prefix}{spec.name}" for spec in ALL_TOPICS if spec.name in {"text.in", "text.raw"}}
    names["dlq.ingest"] = f"{prefix}dlq.ingest"
    specs = [spec for spec in ALL_TOPICS if spec.name in names]
    assert sorted(await create_topics(sasl_kafka, specs, rename=names)) == sorted(names.values())

    settings = IngestSettings(
        kafka=sasl_kafka,
        topic_in=names["text.in"],
        topic_out=names["text.raw"],
        topic_dlq=names["dlq.ingest"],
        group_id=f"g-sasl-{tag}",
    )
    key = f"k-{uuid.uuid4().hex}"
    app = create_app(settings, api_security=ApiSecuritySettings(keys=[SecretStr(key)]))
    async with running(app) as client:
        body, ctype = js(ev(id=f"sasl-http-{tag}")), {"content-type": JSON}
        assert (await client.post("/v1/events", content=body, headers=ctype)).status_code == 401
        resp = await client.post("/v1/events", content=body, headers={**ctype, "Authorization": f"Bearer {key}"})
        assert resp.status_code == 202, resp.text
        assert (await client.get("/ready")).status_code == 200

        producer = AIOKafkaProducer(**client_options(sasl_kafka))  # type: ignore[arg-type]
        await producer.start()
        try:
            await producer.send_and_wait(names["text.in"], js(ev(id=f"sasl-kafka-{tag}")))
            await producer.send_and_wait(names["text.in"], b"\xff not json")
        finally:
            await producer.stop()

        raw = await read_all(sasl_kafka, names["text.raw"], expect=2, timeout_s=90)
        dlq = await read_all(sasl_kafka, names["dlq.ingest"], expect=1, timeout_s=60)
    ids = sorted(headers(r).get(H_EVENT_ID, "") for r in raw)
    assert ids == sorted([f"sasl-http-{tag}", f"sasl-kafka-{tag}"]), [headers(r) for r in raw]
    assert len(dlq) == 1
    assert dlq[0].value == b"\xff not json"


@pytest.mark.parametrize(
    ("override", "expect"),
    [
        ({"sasl_password": SecretStr("not-the-password")}, "SaslAuthenticationFailed"),
        ({"sasl_username": "nobody"}, "SaslAuthenticationFailed"),
        ({"ssl_cafile": None}, "CERTIFICATE_VERIFY_FAILED"),
    ],
    ids=["wrong-password", "unknown-user", "untrusted-ca"],
)
async def test_refused_login_fails_fast_and_clearly(
    sasl_kafka: KafkaSettings, override: dict[str, object], expect: str
) -> None:
    bad = sasl_kafka.model_copy(update=override)
    broker = make_broker(bad, service="sasl-test")
    started = time.monotonic()
    with pytest.raises(KafkaAuthError) as info:
        await start_with_retry(broker, 60)
    elapsed = time.monotonic() - started
    await broker.stop()
    assert elapsed < 15, f"took {elapsed:.1f}s: the refusal was retried"
    assert expect in str(info.value)
    assert "TEXTPULSE_KAFKA_SASL_PASSWORD" in str(info.value)
    # The message names the user, never the password.
    assert "not-the-password" not in str(info.value)
    if bad.sasl_password is not None:
        assert bad.sasl_password.get_secret_value() not in str(info.value)


async def test_service_start_up_surfaces_the_refusal(sasl_kafka: KafkaSettings) -> None:
    """The ingest service's start-up (warm-up reader, then the broker) stops at once with the cause."""
    bad = sasl_kafka.model_copy(update={"sasl_password": SecretStr("wrong")})
    app = create_app(IngestSettings(kafka=bad, topic_out=f"t.sasl-none-{uuid.uuid4().hex[:6]}"))
    started = time.monotonic()
    with pytest.raises(KafkaAuthError, match="refused user 'textpulse'"):
        async with running(app):
            pass
    assert time.monotonic() - started < 15
