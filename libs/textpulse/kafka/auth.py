"""Tell a refused login apart from a broker that is not up yet.

aiokafka's bootstrap swallows the reason a connection failed (a wrong SASL
password, an unknown mechanism, a certificate the CA does not sign) and raises a
generic, retriable ``KafkaConnectionError("Unable to bootstrap …")``; a service
would then retry for its whole start-up timeout and fail with a message that says
nothing about credentials. :func:`check_auth` opens one connection to each
bootstrap server itself and turns such a refusal into :class:`KafkaAuthError`,
which start-up does not retry.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka import errors
from aiokafka.conn import create_conn

#: Keyword arguments of aiokafka's clients that describe how to connect and log in.
CONNECTION_KEYS = (
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "sasl_kerberos_service_name",
    "sasl_kerberos_domain_name",
    "sasl_oauth_token_provider",
)
_REFUSED = (
    errors.SaslAuthenticationFailed,
    errors.AuthenticationFailedError,
    errors.UnsupportedSaslMechanismError,
    errors.IllegalSaslStateError,
    ssl.SSLCertVerificationError,
)


class KafkaAuthError(RuntimeError):
    """The broker refused this client's credentials or TLS identity: retrying cannot help."""


def broker_connection(broker: Any) -> dict[str, Any] | None:
    """The connection keywords a FastStream ``KafkaBroker`` was built with (None if they cannot be found)."""
    builder = getattr(getattr(getattr(broker, "config", None), "broker_config", None), "builder", None)
    keywords = getattr(builder, "keywords", None)
    return dict(keywords) if isinstance(keywords, Mapping) else None


async def check_auth(connection: Mapping[str, Any], *, timeout_s: float = 10.0) -> None:
    """Connect (TLS handshake, SASL login) to each bootstrap server once; raise :class:`KafkaAuthError` if refused.

    Any other failure (connection refused, timeout) is left to the caller's retries.
    """
    if connection.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
        return
    servers = connection.get("bootstrap_servers") or []
    if isinstance(servers, str):
        servers = servers.split(",")
    options = {key: connection[key] for key in CONNECTION_KEYS if key in connection}
    for server in servers:
        host, _, port = str(server).strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options), timeout_s
            )
        except _REFUSED as exc:
            user = connection.get("sasl_plain_username")
            mechanism = connection.get("sasl_mechanism")
            who = f"user {user!r} ({mechanism})" if user else "this client"
            msg = (
                f"Kafka at {server} refused {who} over {connection.get('security_protocol')}: {exc}. "
                "Check TEXTPULSE_KAFKA_SASL_USERNAME, TEXTPULSE_KAFKA_SASL_PASSWORD, "
                "TEXTPULSE_KAFKA_SASL_MECHANISM and TEXTPULSE_KAFKA_SSL_CAFILE."
            )
            raise KafkaAuthError(msg) from exc
        except (OSError, TimeoutError, errors.KafkaError):
            continue
        conn.close()
