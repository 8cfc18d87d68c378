"""``make bench-route``: routing quality of services/route on the Banking77 and CLINC150 dev splits.

Ground truth: the queue the rules give the TRUE intent (``oos`` → human-triage).
Predictions: the trained intent model (``.cache/model-repo/intent``, CLINC150
labels, see libs/textpulse/ml/EXPORT_FORMAT.md) and ``.cache/model-repo/banking77``
(``make ml-quick-banking77``, not part of ``make models``) where they exist;
otherwise a simulated classifier: the true intent with probability ``--sim-accuracy`` and a
confidence drawn from Beta(8, 1.5), else a random other intent of the same data
set with a confidence from Beta(3, 3) (CLINC150 out-of-scope examples are
predicted ``oos`` with probability ``--sim-oos-recall``). Each row says which.

Figures, per data set: routing accuracy (queue == true queue), human-triage
rate, confident-wrong rate (sent to a wrong non-triage queue, i.e. a customer
lands in the wrong team without review), and the same for the "oracle" (true
label, confidence 1) that checks the rules cover the vocabulary.
``--kafka`` also pushes the dev sets through the real route service on real
Kafka and reports throughput and agreement with the in-process decisions.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from textpulse.contracts.events import IntentResult, ModelRef
from textpulse.datasets import OOS_LABEL, TextExample, dev_split, label_names, load_text_examples

from bench.common import REPO, console, real_kafka
from services.route.rules import Rules, load_rules

MODEL_DIR = REPO / ".cache" / "model-repo" / "intent"
#: Trained intent model per data set: CLINC150 is the platform's `intent` model; Banking77's is
#: trained with `textpulse train banking77` and exported as `banking77` (not in `make models`).
MODEL_DIRS = {"clinc150": MODEL_DIR, "banking77": REPO / ".cache" / "model-repo" / "banking77"}
SIM_MODEL = ModelRef(name="intent", version="simulated")


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

    def row(self, name: str, source: str) -> list[str]:
        n = max(self.n, 1)
        return [
            name,
            source,
            str(self.n),
            f"{self.correct / n:.1%}",
            f"{self.triaged / n:.1%}",
            f"{self.confident_wrong / n:.2%}",
        ]


def simulate(
    examples: Sequence[TextExample], vocab: list[str], acc: float, oos_recall: float, seed: int
) -> list[Prediction]:
    """A simulated classifier (see the module docstring)."""
    rng = random.Random(seed)
    in_scope = [v for v in vocab if v != OOS_LABEL]
    out: list[Prediction] = []
    for e in examples:
        assert e.label is not None
        if e.label == OOS_LABEL:
            if rng.random() < oos_recall:
                out.append(Prediction(OOS_LABEL, rng.betavariate(8, 1.5), out_of_scope=True))
            else:
                out.append(Prediction(rng.choice(in_scope), rng.betavariate(3, 3)))
        elif rng.random() < acc:
            out.append(Prediction(e.label, rng.betavariate(8, 1.5)))
        else:
            out.append(Prediction(rng.choice([v for v in in_scope if v != e.label]), rng.betavariate(3, 3)))
    return out


def model_predictions(examples: Sequence[TextExample], model_dir: Path = MODEL_DIR) -> list[Prediction] | None:
    """Predictions of a trained intent model, or None when it is not there."""
    if not model_dir.exists():
        return None
    from textpulse.ml.predictor import Predictor  # lazy: torch / onnxruntime

    predictor = Predictor(model_dir, backend="onnx" if any(model_dir.rglob("model.onnx")) else "torch")
    results = predictor.predict([e.text for e in examples])
    return [Prediction(r["label"], float(r["score"]), out_of_scope=r["label"] == OOS_LABEL) for r in results]


def score(rules: Rules, examples: Sequence[TextExample], preds: Sequence[Prediction]) -> Figures:
    fig = Figures(queues=Counter())
    for e, p in zip(examples, preds, strict=True):
        assert e.label is not None
        truth = rules.queue_for_intent(e.label)
        result = IntentResult(
            label=p.label, score=min(max(p.score, 0.0), 1.0), model=SIM_MODEL, out_of_scope=p.out_of_scope
        )
        d = rules.decide(result, None)
        fig.n += 1
        fig.correct += d.queue == truth
        fig.triaged += d.triaged
        fig.confident_wrong += (not d.triaged) and d.queue != truth
        assert fig.queues is not None
        fig.queues[d.queue] += 1
    return fig


def datasets(limit: int | None) -> dict[str, list[TextExample]]:
    """Dev examples per data set.

    Banking77: the seeded dev split carved from train. CLINC150: the official
    ``val`` split (with ``oos_val``): the intent model trains on a subset of
    ``train``, so a split carved from ``train`` would score examples it has
    seen; ``val`` only chose its early-stopping point and oos threshold.
    """
    _, banking = dev_split(load_text_examples("banking77/train.csv"))
    clinc = load_text_examples("clinc150/data_full.json", dataset="clinc150:val")
    return {name: (dev[:limit] if limit else dev) for name, dev in (("banking77", banking), ("clinc150", clinc))}


async def through_kafka(rules: Rules, dev: dict[str, list[TextExample]], preds: dict[str, list[Prediction]]) -> None:
    """Push every dev example through the real route service and compare with the in-process decision."""
    import orjson
    from aiokafka import AIOKafkaProducer
    from textpulse.contracts.events import encode
    from textpulse.contracts.topics import ALL_TOPICS, STREAM_PARTITIONS, TopicSpec
    from textpulse.kafka.admin import client_options, create_topics
    from textpulse.settings import KafkaSettings

    from services.route.app import create_app
    from services.route.settings import RouteSettings
    from services.route.synth import support_event
    from tests.helpers import read_all

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
        expected = {}
        for ds, examples in dev.items():
            for i, (e, p) in enumerate(zip(examples, preds[ds], strict=True)):
                eid = f"{ds}-{i}"
                events.append(
                    support_event(
                        eid, e.text, p.label, min(max(p.score, 0.0), 1.0), conversation=eid, out_of_scope=p.out_of_scope
                    )
                )
                expected[eid] = rules.decide(events[-1].intent, None).queue
        app = create_app(settings)
        prod = AIOKafkaProducer(**client_options(kafka), acks="all", linger_ms=5)  # type: ignore[arg-type]
        await prod.start()
        async with app.start_lifespan_context():
            for ev in events:
                await prod.send(settings.topic_in, encode(ev), key=f"conv:{ev.event.conversation_id}".encode())
            await prod.flush()
            started = time.perf_counter()
            routed = await read_all(kafka, settings.topic_out, expect=len(events), timeout_s=300)
            elapsed = time.perf_counter() - started
        await prod.stop()
        agree = sum(orjson.loads(r.value)["queue"] == expected[orjson.loads(r.value)["event_id"]] for r in routed)
        console.print(
            f"[bold]real Kafka[/]: {len(routed)}/{len(events)} routed in {elapsed:.1f}s "
            f"({len(routed) / max(elapsed, 1e-9):.0f} msg/s incl. read-back idle 1 s); "
            f"agreement with in-process decisions {agree}/{len(routed)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="At most this many dev examples per data set.")
    parser.add_argument("--sim-accuracy", type=float, default=0.92)
    parser.add_argument("--sim-oos-recall", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--rules", type=Path, default=None)
    parser.add_argument("--kafka", action="store_true", help="Also route the dev sets through real Kafka.")
    args = parser.parse_args()
    rules = load_rules(args.rules)
    dev = datasets(args.limit)
    table = Table(title=f"Routing on the dev splits (rules {rules.version})")
    for col in ("data set", "predictions", "n", "routing accuracy", "human-triage rate", "confident wrong routes"):
        table.add_column(col)
    used: dict[str, list[Prediction]] = {}
    for name, examples in dev.items():
        oracle = [Prediction(e.label or "", 1.0, out_of_scope=e.label == OOS_LABEL) for e in examples]
        table.add_row(*score(rules, examples, oracle).row(name, "oracle: true label, p=1"))
        preds = model_predictions(examples, MODEL_DIRS[name])
        source = "trained intent model"
        if preds is None:
            preds = simulate(examples, label_names(name), args.sim_accuracy, args.sim_oos_recall, args.seed)
            source = f"SIMULATED (acc {args.sim_accuracy}, oos recall {args.sim_oos_recall})"
        table.add_row(*score(rules, examples, preds).row(name, source))
        used[name] = preds
    console.print(table)
    if not MODEL_DIR.exists():
        console.print(
            f"No trained intent model at {MODEL_DIR.relative_to(REPO)}: the model rows use true labels with a "
            "simulated confidence (they measure the rules and the threshold, not a classifier)."
        )
    if args.kafka:
        asyncio.run(through_kafka(rules, dev, used))


if __name__ == "__main__":
    main()
