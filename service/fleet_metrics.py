"""One scrape for a host's ``serve --workers N``: the workers' scrapes added up.

Each worker keeps its own registry (``service.metrics``: custom collectors, which
prometheus-client's multiprocess mode cannot aggregate), so the parent scrapes
every worker and answers once (``api.fleet``):

* counters and histograms (every bucket, ``_sum`` and ``_count``) are summed; a
  worker that dies or is replaced leaves its last figures in the sum, a worker that
  misses one scrape counts with its last figures, and a figure that drops within
  one pid (a reused pid, a counter object made anew) carries what it had reached,
  so a total never goes backwards and ``rate()`` sees no false reset;
* gauges are aggregated as ``service.metrics.GAUGE_AGGREGATION`` says (sum, max or
  min over the workers that answered);
* ``_created`` samples are left out (a creation time per worker has no sum), and a
  summary's quantiles are taken as the largest (they cannot be added);
* a scrape that cannot be parsed is left out of the round, as if the worker had
  not answered (``answer`` returns its pid among the failed).

Pure: text in, text out; the memory it keeps is one set of figures per live worker
and one for all the retired ones.
"""

from __future__ import annotations

import threading
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
        # What a pid's figure had reached before it dropped (added to what it says).
        self._carried: dict[int, Counter[SampleKey]] = {}
        self._retired: Counter[SampleKey] = Counter()  # totals of workers gone
        # Scrapes may be answered from several threads at once (to_thread).
        self._lock = threading.Lock()

    def answer(
        self, scrapes: Mapping[int, str], alive: Iterable[int], own: Iterable[Metric] = ()
    ) -> tuple[bytes, list[int]]:
        """The fleet's scrape from this round's ``scrapes`` (by worker pid; a worker
        that did not answer is absent), given which workers are ``alive``; ``own``:
        the parent's own families. Also the pids whose scrape could not be read."""
        with self._lock:
            return self._answer(scrapes, set(alive), list(own))

    def _answer(
        self, scrapes: Mapping[int, str], alive: set[int], own: list[Metric]
    ) -> tuple[bytes, list[int]]:
        gauges: dict[SampleKey, list[float]] = {}
        unreadable = []
        for pid, text in scrapes.items():
            try:
                scrape = self._parse(text)
            except (ValueError, IndexError, KeyError, TypeError):
                unreadable.append(pid)
                continue
            self._note_totals(pid, scrape.totals)
            for key, value in scrape.gauges.items():
                gauges.setdefault(key, []).append(value)
        for pid in [pid for pid in self._last if pid not in alive]:
            self._retired.update(self._last.pop(pid))
            self._retired.update(self._carried.pop(pid, Counter()))
        totals: Counter[SampleKey] = Counter(self._retired)
        for pid, figures in self._last.items():
            totals.update(figures)
            totals.update(self._carried.get(pid, Counter()))
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
        return generate_latest(registry), unreadable

    def _note_totals(self, pid: int, totals: dict[SampleKey, float]) -> None:
        last = self._last.get(pid, {})
        for key, value in totals.items():
            before = last.get(key)
            if before is not None and value < before:
                self._carried.setdefault(pid, Counter())[key] += before
        self._last[pid] = totals

    def _parse(self, text: str) -> _Scrape:
        """The scrape's samples; ValueError when it is not Prometheus text."""
        scrape = _Scrape()
        families = list(text_string_to_metric_families(text))  # parse all before noting
        for family in families:
            self._families.setdefault(
                family.name, _Family(family.name, family.documentation, family.type)
            )
            summed = family.type in _SUMMED_TYPES
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                self._family_of.setdefault(sample.name, family.name)
                key = (sample.name, tuple(sorted(sample.labels.items())))
                # A summary's quantiles are no sum: the largest is shown.
                total = summed and "quantile" not in sample.labels
                (scrape.totals if total else scrape.gauges)[key] = sample.value
        return scrape


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics
