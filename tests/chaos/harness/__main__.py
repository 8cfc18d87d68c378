"""``python -m tests.chaos.harness run|load`` (``make chaos``, ``make chaos-load``)."""

from tests.chaos.harness.cli import app

app(prog_name="python -m tests.chaos.harness")
