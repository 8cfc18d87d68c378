"""Elasticsearch set-up: the client, waiting for the cluster, templates, retention.

Retention deletes whole monthly indices older than ``retention_months`` (the
local node has no ILM); the month an index holds comes from its name, so the
job never needs a query and never touches an index it did not name.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime

from elasticsearch import AsyncElasticsearch, TransportError
from elasticsearch.serializer import OrjsonSerializer
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_delay, wait_fixed

from .mappings import FAMILIES, Family, template_body
from .settings import IndexSettings

log = logging.getLogger(__name__)

_MONTH = re.compile(r"-(\d{4})\.(\d{2})$")


def make_client(settings: IndexSettings) -> AsyncElasticsearch:
    """The async client: orjson bodies, one transport retry (the bulk writer does the patient retrying)."""
    return AsyncElasticsearch(
        [u.strip() for u in settings.es_url.split(",")],
        serializer=OrjsonSerializer(),
        request_timeout=settings.es_request_timeout_s,
        max_retries=1,
        retry_on_timeout=True,
        ca_certs=str(settings.es_ca_file) if settings.es_ca_file else None,
    )


async def wait_for_es(es: AsyncElasticsearch, timeout_s: float) -> None:
    """Block until the cluster is at least yellow, or raise TimeoutError (with the last status or error)."""

    async def probe() -> None:
        health = await es.cluster.health(wait_for_status="yellow", timeout="5s")
        if health.body.get("timed_out"):
            raise _NotReadyError(health.body.get("status"))

    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(1.0),
            retry=retry_if_exception_type((TransportError, _NotReadyError)),
        ):
            with attempt:
                await probe()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        msg = f"Elasticsearch did not become ready within {timeout_s:.0f}s: {last!r}"
        raise TimeoutError(msg) from last


class _NotReadyError(Exception):
    """The cluster answered, but not yet yellow (its status is the argument)."""


async def install_templates(es: AsyncElasticsearch, settings: IndexSettings) -> list[str]:
    """Create or update the index template of every family (idempotent); returns their names."""
    names = []
    for family in FAMILIES:
        name = family.template_name(settings.index_prefix)
        await es.indices.put_index_template(name=name, **template_body(family, settings))
        names.append(name)
    log.info("index templates installed", extra={"templates": names})
    return names


def month_of(index: str) -> tuple[int, int] | None:
    """(year, month) from a monthly index name, None for any other name."""
    m = _MONTH.search(index)
    return (int(m.group(1)), int(m.group(2))) if m else None


def expired(indices: list[str], now: datetime, keep_months: int) -> list[str]:
    """Indices whose month is more than ``keep_months`` before ``now``'s month."""
    current = now.year * 12 + now.month - 1
    out = []
    for name in indices:
        ym = month_of(name)
        if ym and current - (ym[0] * 12 + ym[1] - 1) > keep_months:
            out.append(name)
    return sorted(out)


async def apply_retention(
    es: AsyncElasticsearch,
    settings: IndexSettings,
    now: datetime | None = None,
    families: tuple[Family, ...] = FAMILIES,
) -> list[str]:
    """Delete the expired monthly indices of each family; returns the deleted names."""
    now = now or datetime.now(UTC)
    deleted: list[str] = []
    for family in families:
        pattern = family.pattern(settings.index_prefix)
        found = await es.indices.get(
            index=pattern, ignore_unavailable=True, allow_no_indices=True, expand_wildcards="open,closed"
        )
        for name in expired(list(found.body), now, settings.retention_months):
            await es.indices.delete(index=name)
            deleted.append(name)
    if deleted:
        log.info("retention deleted indices", extra={"indices": deleted})
    return deleted


async def retention_loop(es: AsyncElasticsearch, settings: IndexSettings) -> None:
    """Run :func:`apply_retention` every ``retention_check_s``; failures are logged and retried next time."""
    while True:
        try:
            await apply_retention(es, settings)
        except TransportError:
            log.warning("retention run failed; next attempt in %.0fs", settings.retention_check_s, exc_info=True)
        await asyncio.sleep(settings.retention_check_s)
