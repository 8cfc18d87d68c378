"""The example service's logic, without a broker (services/_example: the service to copy)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from textpulse.contracts import Channel, TextEvent

from services._example.handlers import keep
from services._example.settings import ExampleSettings

T0 = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(("channel", "kept"), [(Channel.SUPPORT, True), (Channel.NEWS, False)])
def test_keep(channel: Channel, kept: bool) -> None:
    ev = TextEvent(id="e1", source="test", channel=channel, text="hi", event_time=T0, ingest_time=T0)
    assert keep(ev, ExampleSettings().channels) is kept


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTPULSE_EXAMPLE_CHANNELS", '["news", "review"]')
    assert ExampleSettings().channels == {Channel.NEWS, Channel.REVIEW}
