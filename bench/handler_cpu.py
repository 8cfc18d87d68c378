"""CPU-seconds of the in-process classify and NER handlers on N events, without Kafka (not a timed test).

Feeds ``handle_records`` of both services the records Kafka would hand them (JSON
values, headers), in polls of ``--batch``, with the in-process backend over the
model repository and writers that only collect, and prints the process CPU time
(``time.process_time``: every thread, so ONNX Runtime's too) per handler and per
1,000 events, and how much of it was spent outside the models' ``session.run`` (the
Python per-event overhead). CPU time, not wall time, so the figure holds on a loaded
machine (contention still inflates it: compare runs interleaved in one process);
``--threads 1`` (the default) makes ORT compute on the calling thread, so its share can
be timed with ``time.thread_time``.

    .venv/bin/python -m bench.handler_cpu --events 1024          # figures
    .venv/bin/python -m bench.handler_cpu --profile /tmp/prof    # + cProfile of the event-loop thread per handler
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import REPO


@dataclass(frozen=True, slots=True)
class Record:
    """The fields of a consumed Kafka record the handlers read."""

    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    topic: str = "text.raw"
    partition: int = 0
    offset: int = 0


@dataclass
class Collect:
    """A RecordWriter that keeps what it is given (the Kafka write is not what is measured)."""

    records: list[Any] = field(default_factory=list)

    async def write(self, records: Sequence[Any]) -> None:
        self.records.extend(records)


class NoDeadLetters:
    """The benchmark's events are all valid: a dead letter means the harness is broken."""

    async def send(self, _rec: Any, reason: str, _exc: BaseException | None = None) -> None:
        msg = f"unexpected dead letter: {reason}"
        raise AssertionError(msg)


def raw_records(n: int) -> list[Record]:
    """``text.raw`` records of ``n`` social events from the benchmark's tweets."""
    from textpulse.replay import build_events

    rows = build_events("twitter_fin_sentiment/sent_train.csv", channel="social", limit=n)
    while len(rows) < n:
        rows += rows[: n - len(rows)]
    now = datetime.now(UTC).isoformat()
    out = []
    for i, row in enumerate(rows[:n]):
        event = {**row, "id": f"cpu-{i}", "schema_version": 1, "ingest_time": now, "event_time": now}
        event.pop("metadata", None)
        headers = (("event-id", f"cpu-{i}".encode()), ("event-type", b"TextEvent"), ("schema-version", b"1"))
        out.append(Record(orjson.dumps(event), event["id"].encode(), headers, offset=i))
    return out


class TimedSession:
    """An ONNX Runtime session that adds the CPU time of its ``run`` calls (calling thread) to ``spent``.

    With one intra-op thread ORT computes on the calling thread, so total CPU minus this is
    what the process spends outside the model: decoding, validation, tokenisation, encoding.
    """

    def __init__(self, session: Any, spent: list[float]) -> None:
        self._session, self._spent = session, spent

    def run(self, *args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return self._session.run(*args, **kwargs)
        finally:
            self._spent[0] += time.thread_time() - started


@dataclass
class Figures:
    """CPU-seconds of one round: each handler, and the part of them spent inside the models."""

    classify: float
    ner: float
    classify_model: float
    ner_model: float
    loop: float = 0.0  # of the event-loop thread (decode, validation, routing, output records, metrics)

    @property
    def total(self) -> float:
        return self.classify + self.ner

    @property
    def outside_model(self) -> float:
        return self.total - self.classify_model - self.ner_model


class Harness:
    """Both services' handlers over one in-process backend built from the services' own settings."""

    def __init__(self, events: int, batch: int, threads: int) -> None:
        self.events, self.batch, self.threads = events, batch, threads
        self.model_cpu = [0.0]

    async def start(self) -> None:
        from textpulse.inference.metrics import InferenceMetrics
        from textpulse.inference.settings import make_backend

        from services.classify import handlers as classify_handlers
        from services.classify.core import Classifier
        from services.classify.settings import ClassifySettings
        from services.ner import handlers as ner_handlers
        from services.ner.core import Enricher
        from services.ner.settings import NerSettings

        self.classify_handlers, self.ner_handlers = classify_handlers, ner_handlers
        os.environ.setdefault("TEXTPULSE_MODEL_REPO", str(REPO / ".cache" / "model-repo"))
        classify_settings, ner_settings = ClassifySettings(), NerSettings()
        cm, nm = InferenceMetrics("classify", enabled=True), InferenceMetrics("ner", enabled=True)
        # one backend as the services build theirs (their own settings), ORT threads pinned
        inference = classify_settings.inference.model_copy(update={"triton_url": None, "local_threads": self.threads})
        self.backend = backend = make_backend(inference, observe=cm.observe, on_error=cm.error)
        cm.watch(backend)
        classifier = Classifier(backend, classify_settings.routes())
        await backend.start([*classifier.needed_models(), ner_settings.ner_model], classifier.head_specs())
        for predictor in getattr(backend, "_predictors", {}).values():
            if getattr(predictor, "_session", None) is not None:
                predictor._session = TimedSession(predictor._session, self.model_cpu)
        self.classified, self.enriched, self.mentioned = Collect(), Collect(), Collect()
        self.cdeps = classify_handlers.Deps(classifier, self.classified, NoDeadLetters(), cm, classify_settings)  # type: ignore[arg-type]
        self.ndeps = ner_handlers.Deps(
            Enricher(backend, ner_settings.ner_model),
            self.enriched,  # type: ignore[arg-type]
            self.mentioned,  # type: ignore[arg-type]
            NoDeadLetters(),  # type: ignore[arg-type]
            nm,
            ner_settings,
        )
        records = raw_records(self.events)
        self.polls = [records[i : i + self.batch] for i in range(0, len(records), self.batch)]
        # warm-up: ORT sessions, tokenizer caches, pydantic's first validations
        await self.round()

    async def round(self, profile: Path | None = None) -> Figures:
        for collected in (self.classified, self.enriched, self.mentioned):
            collected.records.clear()
        model_before, loop = self.model_cpu[0], time.thread_time()
        classify_cpu, classify_model = await self._timed(
            [lambda poll=poll: self.classify_handlers.handle_records(poll, self.cdeps) for poll in self.polls],
            profile and Path(f"{profile}-classify.pstats"),
        )
        ner_in = [
            Record(o.value, o.key, tuple((k, v.encode()) for k, v in o.headers.items()), topic="text.classified")
            for o in self.classified.records
        ]
        ner_polls = [ner_in[i : i + self.batch] for i in range(0, len(ner_in), self.batch)]
        ner_cpu, ner_model = await self._timed(
            [lambda poll=poll: self.ner_handlers.handle_records(poll, self.ndeps) for poll in ner_polls],
            profile and Path(f"{profile}-ner.pstats"),
        )
        loop = time.thread_time() - loop  # includes building ner_in: negligible beside the handlers
        assert len(self.enriched.records) == self.events, (len(self.enriched.records), self.events)
        assert self.model_cpu[0] - model_before >= classify_model + ner_model - 1e-9
        return Figures(classify_cpu, ner_cpu, classify_model, ner_model, loop)

    async def _timed(self, calls: Sequence[Any], profile: Path | None) -> tuple[float, float]:
        prof = cProfile.Profile() if profile else None
        model_before, cpu = self.model_cpu[0], time.process_time()
        if prof:
            prof.enable()
        for call in calls:
            await call()
        spent = time.process_time() - cpu
        if prof:
            prof.disable()
            prof.dump_stats(profile)
        return spent, self.model_cpu[0] - model_before

    async def close(self) -> None:
        await self.backend.close()

    def line(self, label: str, f: Figures) -> str:
        per = 1000 / self.events
        return (
            f"{label}: {self.events} events, polls of {self.batch}, ORT threads={self.threads}: "
            f"classify {f.classify:.3f} CPU-s ({f.classify_model:.3f} in the model), "
            f"ner {f.ner:.3f} ({f.ner_model:.3f}); per 1,000 events {f.total * per:.3f} CPU-s, "
            f"outside the models {f.outside_model * per:.3f} (event loop {f.loop * per:.3f})"
        )


async def run(events: int, batch: int, threads: int, rounds: int, profile: Path | None) -> None:
    harness = Harness(events, batch, threads)
    await harness.start()
    try:
        for r in range(rounds):
            print(harness.line(f"round {r + 1}", await harness.round(profile)), flush=True)
    finally:
        await harness.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256, help="records per poll")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None, help="write <PREFIX>-classify/-ner.pstats")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.batch, args.threads, args.rounds, args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
