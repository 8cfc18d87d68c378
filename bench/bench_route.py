"""``make bench-route``: routing quality of services/route on Banking77 and CLINC150, with the trained models.

Ground truth: the queue the rules give the TRUE intent (``oos`` → human-triage).
Predictions: the trained intent models of the model repository, never a simulation:
``.cache/model-repo/intent`` (the single-task CLINC150 + oos model, ``make ml-quick-clinc150`` or
``make models-single``; classify serves the same task as the ``support`` model's primary head)
and ``.cache/model-repo/banking77`` (``make ml-quick-banking77``, not part of ``make models``).
A missing model stops the run with the make target that trains it.

Scored examples, neither of which chose a checkpoint or calibrated a threshold of the model:

* CLINC150: the official ``val`` + ``oos_val`` (3,100 messages). The intent model picks its
  checkpoint and calibrates its out-of-scope threshold on a dev split carved from
  ``train`` + ``oos_train`` (``carve_dev: true`` in its ``training_config.json``); a model
  whose config says otherwise (trained on the old preset that used ``val``) is refused.
  The official test split stays held out.
* Banking77 (no official dev split; test held out): the dev split the model was trained
  against, rebuilt from its own ``training_config.json`` (same fraction, seed, limit). It has
  no threshold; when training evaluated it more than once it also chose the checkpoint, and
  the row says so (``metrics.json`` history).

Figures, per data set: routing accuracy (queue == true queue), human-triage
rate, confident-wrong rate (sent to a wrong non-triage queue, i.e. a customer
lands in the wrong team without review), beside the reference measured in the
same run: the "oracle" (true label, confidence 1), which also checks that the
rules cover the vocabulary; the ratio is the model's routing accuracy over the oracle's.
``--kafka`` also pushes the scored sets through the real route service on real
Kafka and reports throughput from the first produce to the last routed record
(beside the in-process decision rate of the same rules) and agreement with the
in-process decisions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from textpulse.contracts.events import IntentResult, ModelRef
from textpulse.datasets import OOS_LABEL, TextExample, load_text_examples
from textpulse.settings import KafkaSettings

from bench.common import REPO, console, real_kafka
from services.route.rules import Rules, load_rules

MODEL_REPO = REPO / ".cache" / "model-repo"
#: Trained intent model per data set and the make target that trains it: CLINC150's single-task
#: `intent` model (not in `make models`, which serves it as the `support` model's primary head);
#: Banking77's is exported as `banking77` (not in `make models`).
MODELS = {
    "banking77": (MODEL_REPO / "banking77", "make ml-quick-banking77"),
    "clinc150": (MODEL_REPO / "intent", "make ml-quick-clinc150"),
}
DECIDE_MODEL = ModelRef(name="intent", version="bench")


class MissingModel(SystemExit):
    """No usable trained model for a data set (exit status 2, message names the make target)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    score: float
    out_of_scope: bool = False


@dataclass
class Figures:
    n: int = 0
    correct: int = 0
    triaged: int = 0
    confident_wrong: int = 0
    queues: Counter[str] | None = None

    def row(self, name: str, source: str, reference: Figures) -> list[str]:
        n = max(self.n, 1)
        return [
            name,
            source,
            str(self.n),
            f"{self.correct / n:.1%}",
            f"{self.correct / max(reference.correct, 1):.3f}×",
            f"{self.triaged / n:.1%}",
            f"{self.confident_wrong / n:.2%}",
        ]


@dataclass(frozen=True, slots=True)
class Scored:
    """The examples a data set is scored on and where they come from."""

    examples: list[TextExample]
    source: str
    model_dir: Path


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def training_config(version_dir: Path) -> dict[str, object]:
    path = version_dir / "training_config.json"
    if not path.is_file():
        raise MissingModel(f"{version_dir} has no training_config.json: cannot tell what it was tuned on")
    data: dict[str, object] = json.loads(path.read_text("utf-8"))
    return data


def model_version(name: str, folder: Path | None = None) -> Path:
    """The latest exported version of the data set's model (or of ``folder``: a trained model dir, an
    exported version or a Triton model dir), or a :class:`MissingModel` naming its make target."""
    from textpulse.ml.predictor import resolve_model_dir

    default, target = MODELS[name]
    folder = folder or default
    try:
        version: Path = resolve_model_dir(folder)
    except FileNotFoundError:
        msg = f"no trained {name} model at {_shown(folder)}: train it with `{target}`"
        raise MissingModel(msg) from None
    return version


def clinc150_examples(version_dir: Path) -> Scored:
    """Official val + oos_val, only for a model whose dev (checkpoint + threshold) was carved from train."""
    config = training_config(version_dir)
    if config.get("carve_dev") is not True or config.get("train_file") or config.get("dev_file"):
        msg = (
            f"the intent model {_shown(version_dir)} did not carve its dev split from CLINC150 train "
            f"(training_config.json: carve_dev={config.get('carve_dev')!r}, dev_file={config.get('dev_file')!r}): "
            "it may have chosen its checkpoint and oos threshold on the official val split scored here; "
            f"retrain it with `{MODELS['clinc150'][1]}`"
        )
        raise MissingModel(msg)
    examples = load_text_examples("clinc150/data_full.json", dataset="clinc150:val")
    return Scored(examples, "official val + oos_val (dev carved from train)", version_dir)


def banking77_examples(version_dir: Path) -> Scored:
    """The dev split the model trained against, rebuilt from its training_config.json."""
    from textpulse.ml.config import TrainConfig
    from textpulse.ml.train import dev_examples_for

    raw = training_config(version_dir)
    config = TrainConfig.model_validate({k: v for k, v in raw.items() if k in TrainConfig.model_fields})
    examples = [e for e in dev_examples_for(config) if isinstance(e, TextExample)]
    metrics_path = version_dir / "metrics.json"
    history = json.loads(metrics_path.read_text("utf-8")).get("history", []) if metrics_path.is_file() else []
    chose = "; it also chose the checkpoint" if len(history) > 1 else "; one evaluation, chose nothing"
    source = f"model's dev split ({config.dev_fraction:.0%} of train, seed {config.data_seed}){chose}"
    return Scored(examples, source, version_dir)


def model_predictions(examples: Sequence[TextExample], version_dir: Path) -> list[Prediction]:
    """Predictions of the trained model (its calibrated oos threshold applied by the predictor)."""
    from textpulse.ml.predictor import Predictor  # lazy: torch / onnxruntime

    predictor = Predictor(version_dir, backend="onnx" if any(version_dir.rglob("model.onnx")) else "torch")
    results = predictor.predict([e.text for e in examples])
    return [Prediction(r["label"], float(r["score"]), out_of_scope=r["label"] == OOS_LABEL) for r in results]


def score(rules: Rules, examples: Sequence[TextExample], preds: Sequence[Prediction]) -> Figures:
    fig = Figures(queues=Counter())
    for e, p in zip(examples, preds, strict=True):
        assert e.label is not None
        truth = rules.queue_for_intent(e.label)
        result = IntentResult(
            label=p.label, score=min(max(p.score, 0.0), 1.0), model=DECIDE_MODEL, out_of_scope=p.out_of_scope
        )
        d = rules.decide(result, None)
        fig.n += 1
        fig.correct += d.queue == truth
        fig.triaged += d.triaged
        fig.confident_wrong += (not d.triaged) and d.queue != truth
        assert fig.queues is not None
        fig.queues[d.queue] += 1
    return fig


def datasets(names: Sequence[str], limit: int | None, models: dict[str, Path] | None = None) -> dict[str, Scored]:
    """The scored examples per data set (see the module docstring); refuses when a model is missing.

    ``models`` replaces the repository's model of a data set (``--model clinc150=DIR``); the same
    checks apply (an intent model must have carved its dev split from train)."""
    build = {"banking77": banking77_examples, "clinc150": clinc150_examples}
    out = {}
    for name in names:
        scored = build[name](model_version(name, (models or {}).get(name)))
        out[name] = Scored(scored.examples[:limit] if limit else scored.examples, scored.source, scored.model_dir)
    return out


async def _delete_topics(kafka: KafkaSettings, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from textpulse.kafka.admin import client_options

    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.delete_topics([t for t in topics if t in existing])
    finally:
        await admin.close()


async def through_kafka(rules: Rules, dev: dict[str, list[TextExample]], preds: dict[str, list[Prediction]]) -> None:
    """Push every scored example through the real route service and compare with the in-process decision."""
    import orjson
    from aiokafka import AIOKafkaProducer
    from textpulse.contracts.events import encode
    from textpulse.contracts.topics import ALL_TOPICS, STREAM_PARTITIONS, TopicSpec
    from textpulse.kafka.admin import client_options, create_topics
    from textpulse.kafka.read import read_until as read_all

    from services.route.app import create_app
    from services.route.settings import RouteSettings
    from tests.support.route_synth import support_event

    with real_kafka() as bootstrap:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        tag = f"bench-route-{uuid.uuid4().hex[:6]}"
        names = {s.name: f"{tag}.{s.name}" for s in ALL_TOPICS}
        await create_topics(kafka, ALL_TOPICS, rename=names)
        settings = RouteSettings(
            kafka=kafka,
            topic_in=names["text.enriched"],
            topic_out=names["support.routed"],
            topic_dlq=names["dlq.route"],
            queue_topic_prefix=f"{tag}.support.queue.",
            group_id=f"{tag}-route",
        )
        await create_topics(
            kafka,
            [TopicSpec(f"{settings.queue_topic_prefix}{q}", STREAM_PARTITIONS, "c", "bench") for q in rules.queues],
        )
        events = []
        for ds, examples in dev.items():
            for i, (e, p) in enumerate(zip(examples, preds[ds], strict=True)):
                eid = f"{ds}-{i}"
                score = min(max(p.score, 0.0), 1.0)
                events.append(support_event(eid, e.text, p.label, score, conversation=eid, out_of_scope=p.out_of_scope))
        # Reference on the same clock: the same rules deciding the same events in this process.
        started = time.perf_counter()
        expected = {ev.event.id: rules.decide(ev.intent, None).queue for ev in events}
        in_process_rate = len(events) / max(time.perf_counter() - started, 1e-9)
        app = create_app(settings)
        prod = AIOKafkaProducer(**client_options(kafka), acks="all", linger_ms=5)
        await prod.start()
        async with app.start_lifespan_context():
            # The clock starts at the first produce and stops at the last routed record's broker
            # timestamp (same host clock), so neither the produce time nor read-back idling is left out or added.
            first_produce = time.time()
            for ev in events:
                await prod.send(settings.topic_in, encode(ev), key=f"conv:{ev.event.conversation_id}".encode())
            await prod.flush()
            routed = await read_all(kafka, settings.topic_out, expect=len(events), timeout_s=300)
        await prod.stop()
        await _delete_topics(kafka, [*names.values(), *(f"{settings.queue_topic_prefix}{q}" for q in rules.queues)])
        elapsed = max((r.timestamp / 1000 for r in routed), default=first_produce) - first_produce
        agree = sum(orjson.loads(r.value)["queue"] == expected[orjson.loads(r.value)["event_id"]] for r in routed)
        rate = len(routed) / max(elapsed, 1e-9)
        console.print(
            f"[bold]real Kafka[/]: {len(routed)}/{len(events)} routed in {elapsed:.1f} s from the first produce to "
            f"the last routed record: {rate:.0f} msg/s; reference, the same rules in-process: "
            f"{in_process_rate:.0f} decisions/s (ratio {rate / in_process_rate:.2g}); "
            f"agreement with in-process decisions {agree}/{len(routed)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="At most this many examples per data set.")
    parser.add_argument(
        "--datasets", nargs="+", choices=sorted(MODELS), default=sorted(MODELS), help="Data sets to score."
    )
    parser.add_argument("--rules", type=Path, default=None)
    parser.add_argument("--kafka", action="store_true", help="Also route the scored sets through real Kafka.")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="DATASET=DIR",
        help="Score this trained model for a data set instead of the repository's (repeatable).",
    )
    args = parser.parse_args()
    rules = load_rules(args.rules)
    models = {}
    for item in args.model:
        name, _, folder = item.partition("=")
        if name not in MODELS or not folder:
            parser.error(f"--model {item!r}: expected DATASET=DIR with DATASET one of {', '.join(sorted(MODELS))}")
        models[name] = Path(folder)
    try:
        scored = datasets(args.datasets, args.limit, models)
    except MissingModel as exc:
        console.print(f"[red]bench-route needs trained models:[/] {exc.message}")
        raise
    table = Table(title=f"Routing with the trained intent models (rules {rules.version})")
    for col in (
        "data set",
        "predictions",
        "n",
        "routing accuracy",
        "vs oracle",
        "human-triage rate",
        "confident wrong routes",
    ):
        table.add_column(col)
    used: dict[str, list[Prediction]] = {}
    for name, sc in scored.items():
        examples = sc.examples
        oracle = [Prediction(e.label or "", 1.0, out_of_scope=e.label == OOS_LABEL) for e in examples]
        reference = score(rules, examples, oracle)
        table.add_row(*reference.row(name, "reference: oracle (true label, p=1)", reference))
        preds = model_predictions(examples, sc.model_dir)
        model = f"model {sc.model_dir.parent.name} v{sc.model_dir.name}"
        table.add_row(*score(rules, examples, preds).row(name, model, reference))
        used[name] = preds
        console.print(f"{name}: {len(examples)} examples, {sc.source}")
    console.print(table)
    if args.kafka:
        asyncio.run(through_kafka(rules, {n: sc.examples for n, sc in scored.items()}, used))


if __name__ == "__main__":
    main()
