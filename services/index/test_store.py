"""The Elasticsearch client honours the CA-file setting (ECK's self-signed HTTP certificate)."""

from __future__ import annotations

from pathlib import Path

import certifi
import pytest

from services.index.settings import IndexSettings
from services.index.store import make_client

#: A PEM bundle that is always there (elastic-transport depends on certifi).
CA = Path(certifi.where())


async def test_ca_file_reaches_the_tls_context() -> None:
    es = make_client(IndexSettings(es_url="https://search-es-http:9200", es_ca_file=CA))
    try:
        config = es.transport.node_pool.all()[0].config
        assert (config.ca_certs, config.verify_certs) == (str(CA), True)
    finally:
        await es.close()


async def test_without_a_ca_file_the_client_uses_the_default_trust() -> None:
    es = make_client(IndexSettings(es_url="http://127.0.0.1:9200"))
    try:
        assert es.transport.node_pool.all()[0].config.ca_certs is None
    finally:
        await es.close()


def test_a_missing_ca_file_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTPULSE_INDEX_ES_CA_FILE", "/nonexistent/ca.crt")
    with pytest.raises(ValueError, match="ca_certs"):
        make_client(IndexSettings(es_url="https://search-es-http:9200"))
