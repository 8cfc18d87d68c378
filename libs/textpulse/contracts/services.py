"""The platform's services — declared once.

Adding a service means adding one :class:`ServiceSpec` to :data:`REGISTRY`; everything else
that lists services derives from it: the DLQ topics (:data:`textpulse.contracts.topics.ALL_TOPICS`),
``textpulse serve``/``asyncapi``, the demo's pipeline, the Prometheus jobs and target files
(``deploy/prometheus/render_targets.py``) and the checks on the Helm values
(``tests/unit/test_service_registry.py`` fails when one of them misses a service).

Topics are named here, not imported: :mod:`.topics` derives the DLQ topics from this module, so
this one must not import it at load time (``tests/unit/test_service_registry.py`` checks every
name is a declared topic and the default of the named setting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .topics import TopicSpec

#: Every consumer group of the platform is ``<GROUP_PREFIX><service>[<suffix>]``; the lag exporter
#: reads the service back from the name (``textpulse-index-routes`` -> ``index``).
GROUP_PREFIX = "textpulse-"

#: What a service needs besides Kafka, so a runner that has only some of it (the demo: Kafka and
#: the exported text models; the chaos stack: also Elasticsearch) can pick the services it can start.
Need = Literal["models", "recsys", "elasticsearch"]


def consumer_group(service: str, configured: str | None = None, suffix: str = "") -> str:
    """The consumer group of ``service``: the configured ``group_id`` if any, else ``textpulse-<service>``.

    ``suffix`` names a further group of the same service (index: ``-routes``, ``-alerts``): it is
    appended to the configured name too, so one setting moves all of a service's groups.
    """
    return f"{configured or GROUP_PREFIX + service}{suffix}"


@dataclass(frozen=True)
class TopicUse:
    """A topic a service reads or writes, and the setting (of its settings class) that names it.

    ``setting`` ending in ``_prefix`` names a family of topics (``<prefix><name>``).
    """

    setting: str
    topic: str
    #: Inputs only: the consumer group is ``consumer_group(service, suffix=group_suffix)``.
    group_suffix: str = ""


@dataclass(frozen=True)
class ServiceSpec:
    """One deployable service of ``services/<name>/``."""

    name: str
    #: ``worker``: a FastStream consumer app with the ops routes (AsgiFastStream);
    #: ``api``: a FastAPI app with its own HTTP API, the broker on ``app.state``.
    kind: Literal["worker", "api"]
    #: HTTP port of the API and of /health, /ready and /metrics (the Prometheus target).
    port: int
    #: Consumed through a consumer group (what lag measures and autoscaling follows).
    inputs: tuple[TopicUse, ...]
    outputs: tuple[TopicUse, ...] = ()
    needs: frozenset[Need] = frozenset()

    @property
    def module(self) -> str:
        """The module with ``create_app()`` and ``main()`` (``python -m services.<name>.app``)."""
        return f"services.{self.name}.app"

    @property
    def env_prefix(self) -> str:
        """Environment prefix of the service's settings class."""
        return f"TEXTPULSE_{self.name.upper()}_"

    @property
    def group(self) -> str:
        """The default consumer group of the main input (no ``group_id`` configured)."""
        return consumer_group(self.name)

    @property
    def groups(self) -> tuple[str, ...]:
        """Every default consumer group of the service, in input order, without repeats."""
        return tuple(dict.fromkeys(consumer_group(self.name, suffix=use.group_suffix) for use in self.inputs))

    @property
    def dlq(self) -> TopicSpec:
        """The service's dead-letter topic ``dlq.<name>``."""
        from .topics import dlq  # .topics imports this module at load time

        return dlq(self.name)


def _in(setting: str, topic: str, group_suffix: str = "") -> TopicUse:
    return TopicUse(setting, topic, group_suffix)


def _out(setting: str, topic: str) -> TopicUse:
    return TopicUse(setting, topic)


#: Every production service, in port order (ports 8080-8086). ``services/_example`` is not here on
#: purpose: see its README.
REGISTRY: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "ingest",
        "api",
        8080,
        inputs=(_in("topic_in", "text.in"),),
        outputs=(_out("topic_out", "text.raw"),),
    ),
    ServiceSpec(
        "classify",
        "worker",
        8081,
        inputs=(_in("topic_in", "text.raw"),),
        outputs=(_out("topic_out", "text.classified"),),
        needs=frozenset({"models"}),
    ),
    ServiceSpec(
        "ner",
        "worker",
        8082,
        inputs=(_in("topic_in", "text.classified"),),
        outputs=(_out("topic_out", "text.enriched"), _out("topic_mentions", "entity.mentions")),
        needs=frozenset({"models"}),
    ),
    ServiceSpec(
        "alert",
        "worker",
        8083,
        inputs=(_in("topic_mentions", "entity.mentions"), _in("topic_enriched", "text.enriched")),
        outputs=(_out("topic_out", "alerts.financial"), _out("topic_state", "alerts.state")),
    ),
    ServiceSpec(
        "route",
        "worker",
        8084,
        inputs=(_in("topic_in", "text.enriched"),),
        outputs=(_out("topic_out", "support.routed"), _out("queue_topic_prefix", "support.queue.")),
    ),
    ServiceSpec(
        "index",
        "api",
        8085,
        inputs=(
            _in("topic_enriched", "text.enriched"),
            _in("topic_routed", "support.routed", "-routes"),
            _in("topic_alerts", "alerts.financial", "-alerts"),
        ),
        needs=frozenset({"elasticsearch"}),
    ),
    ServiceSpec(
        "recommend",
        "api",
        8086,
        inputs=(_in("topic_interactions", "user.interactions"), _in("topic_items", "items")),
        outputs=(_out("topic_out", "recs.scores"), _out("topic_profiles", "recs.profiles")),
        needs=frozenset({"models", "recsys"}),
    ),
)

#: Service names in registry order.
SERVICES: tuple[str, ...] = tuple(spec.name for spec in REGISTRY)


def service(name: str) -> ServiceSpec:
    """The registered service ``name``; KeyError names the registered ones."""
    for spec in REGISTRY:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown service {name!r}; registered: {', '.join(SERVICES)}")


def runnable(*, have: frozenset[Need] | set[Need]) -> tuple[ServiceSpec, ...]:
    """The services a runner providing Kafka plus ``have`` can start (in registry order)."""
    return tuple(spec for spec in REGISTRY if spec.needs <= have)
