"""The peer for bench.bench_throughput: a Quix Streams app doing less than ses-tracker.

    python -m bench.peer_quix --broker HOST:PORT --topic T --group G --state-dir DIR

Per message id (the record key) it keeps, in Quix's RocksDB state, the highest
status seen (SES's precedence: send < delay < delivery < bounce < complaint) and
the send time, and emits the send-to-delivery latency when a Delivery arrives: a
fraction of what ses-tracker does (no recipients, no timeline, no statistics, no
indexes, no feed). Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from typing import Any

from quixstreams import Application, State
from quixstreams.models.topics.manager import TopicManager

PRECEDENCE = {"Send": 0, "DeliveryDelay": 1, "Delivery": 2, "Bounce": 3, "Complaint": 4}


def _tolerate_missing_retention() -> None:
    """Tansu reports no topic configs; Quix derives its changelog topics' retention
    from the input topic's, so give it Kafka's default (-1: forever) when absent."""
    derive = TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive_with_default(cls: type[TopicManager], topics: Any) -> Any:
        for topic in topics:
            extra = topic.broker_config.extra_config
            extra.setdefault("retention.ms", "-1")
            extra.setdefault("retention.bytes", "-1")
        return derive(cls, topics)

    TopicManager.derive_topic_config = classmethod(derive_with_default)  # type: ignore[method-assign]


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def update(value: dict[str, Any], state: State) -> int | None:
    kind = value.get("eventType")
    rank = PRECEDENCE.get(kind, -1)
    if rank > state.get("status", -1):
        state.set("status", rank)
    sent_at = state.get("sent_at")
    if sent_at is None:
        sent_at = _ms(value["mail"]["timestamp"])
        state.set("sent_at", sent_at)
    if kind == "Delivery":
        return max(0, _ms(value["delivery"]["timestamp"]) - sent_at)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--commit-interval", type=float, default=0.5)
    args = parser.parse_args()
    _tolerate_missing_retention()
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        loglevel=os.environ.get("PEER_LOGLEVEL", "WARNING"),
    )
    sdf = app.dataframe(app.topic(args.topic, value_deserializer="json"))
    sdf = sdf.apply(update, stateful=True)
    app.run(sdf)


if __name__ == "__main__":
    main()
