"""One scrape for a host's ``serve --workers N``: the workers' scrapes added up.

Each worker keeps its own registry (``service.metrics``: custom collectors, which
prometheus-client's multiprocess mode cannot aggregate), so the parent scrapes
every worker and answers once (``api.fleet``):

* counters and histograms (every bucket, ``_sum`` and ``_count``) are summed; a
  worker that dies or is replaced leaves its last figures in the sum, so a total
  never goes backwards and ``rate()`` sees no false reset; a worker that misses one
  scrape counts with its last figures;
* gauges are aggregated as ``service.metrics.GAUGE_AGGREGATION`` says (sum, max or
  min over the workers that answered);
* ``_created`` samples are left out (a creation time per worker has no sum).

Pure: text in, text out; the memory it keeps is one set of figures per live worker
and one for all the retired ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from service.metrics import GAUGE_AGGREGATION

SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels
_SUMMED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
_AGGREGATE = {"sum": sum, "max": max, "min": min}


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    documentation: str
    type: str


@dataclass(slots=True)
class _Scrape:
    totals: dict[SampleKey, float] = field(default_factory=dict)  # counters, histograms
    gauges: dict[SampleKey, float] = field(default_factory=dict)


class FleetMetrics:
    """The workers' scrapes, kept between answers so totals never go backwards."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}  # by family name, in first-seen order
        self._family_of: dict[str, str] = {}  # sample name -> family name
        self._last: dict[int, dict[SampleKey, float]] = {}  # totals by worker pid
        self._retired: Counter[SampleKey] = Counter()  # totals of workers gone

    def answer(
        self, scrapes: Mapping[int, str], alive: Iterable[int], own: Iterable[Metric] = ()
    ) -> bytes:
        """The fleet's scrape from this round's ``scrapes`` (by worker pid; a worker
        that did not answer is absent), given which workers are ``alive``; ``own``:
        the parent's own families."""
        alive = set(alive)
        gauges: dict[SampleKey, list[float]] = {}
        for pid, text in scrapes.items():
            scrape = self._parse(text)
            self._last[pid] = scrape.totals
            for key, value in scrape.gauges.items():
                gauges.setdefault(key, []).append(value)
        for pid in [pid for pid in self._last if pid not in alive]:
            self._retired.update(self._last.pop(pid))
        totals: Counter[SampleKey] = Counter(self._retired)
        for figures in self._last.values():
            totals.update(figures)
        by_family: dict[str, list[tuple[SampleKey, float]]] = {}
        for key, value in totals.items():
            by_family.setdefault(self._family_of[key[0]], []).append((key, value))
        for key, values in gauges.items():
            family = self._family_of[key[0]]
            rule = GAUGE_AGGREGATION.get(family, "max")
            by_family.setdefault(family, []).append((key, _AGGREGATE[rule](values)))
        metrics = []
        for name, family in self._families.items():
            metric = Metric(family.name, family.documentation, family.type)
            for (sample, labels), value in sorted(by_family.get(name, [])):
                metric.add_sample(sample, dict(labels), value)
            if metric.samples:
                metrics.append(metric)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed([*metrics, *own]))
        return generate_latest(registry)

    def _parse(self, text: str) -> _Scrape:
        scrape = _Scrape()
        for family in text_string_to_metric_families(text):
            self._families.setdefault(
                family.name, _Family(family.name, family.documentation, family.type)
            )
            summed = family.type in _SUMMED_TYPES
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                self._family_of.setdefault(sample.name, family.name)
                key = (sample.name, tuple(sorted(sample.labels.items())))
                (scrape.totals if summed else scrape.gauges)[key] = sample.value
        return scrape


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics
