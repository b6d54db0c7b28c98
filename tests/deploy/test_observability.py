"""#29.4: the Grafana dashboard and Prometheus rules shipped for the service itself,
checked by promtool and against a scrape of a service wired to everything."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiobotocore.session import get_session
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.support import ses
from tests.support.kafka import create_topic, keyed, produce, simulated_records, wait_until
from tests.support.push import in_process
from tests.support.receiver import Receiver
from tests.support.servers import MotoServer, RedisServer, TansuBroker
from tests.support.serving import serving

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "ses-tracker.rules.yaml"
RULE_TESTS = PROMETHEUS / "ses-tracker.rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ses-tracker.json"
METRIC = re.compile(r"\bses_tracker_[a-z0-9_]+\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and variable query."""
    found = [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in dashboard()["panels"]
        for target in panel["targets"]
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            inner = re.fullmatch(r"label_values\((.+), \w+\)", query)
            assert inner, query
            found.append((f"variable {variable['name']}", inner.group(1)))
    return found


def as_promql(expr: str) -> str:
    """Grafana's variables substituted as it would: intervals by a duration, every
    other variable by a match-everything regex."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    expr = expr.replace("$__range", "1h")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_the_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_example_scrape_config_passes_promtool_and_names_the_rules_job() -> None:
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yaml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["ses-tracker"]


def test_the_kubernetes_scrape_job_keeps_the_deployments_admin_port() -> None:
    """Debian's promtool has no Kubernetes discovery: checked against the manifests."""
    [job] = yaml.safe_load((PROMETHEUS / "scrape-kubernetes.yaml").read_text())
    assert job["job_name"] == "ses-tracker"  # what the rules' `job=` names
    keeps = {
        tuple(rule["source_labels"]): rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == "keep"
    }
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/base/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]
    label = pod["metadata"]["labels"]["app.kubernetes.io/name"]
    assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == label
    port_names = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
    assert keeps[("__meta_kubernetes_pod_container_port_name",)] == "admin" in port_names
    rules_jobs = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    assert rules_jobs == {job["job_name"]}


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    # The ones an operator pages on are each shown to fire, and when.
    assert {"SesTrackerDown", "SesTrackerStoreUnreachable", "SesTrackerLagging",
            "SesTrackerPartitionsStalled", "SesTrackerDeadLettersGrowing",
            "SesTrackerForwardingBacklog", "SesTrackerRedisNearMemoryLimit",
            "SesTrackerConfigReloadFailed"} <= tested <= alerts  # fmt: skip


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query as a recording rule, so promtool parses and checks it."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": as_promql(expr)}
        for n, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_the_dashboard_shows_what_an_operator_asks_for() -> None:
    board = dashboard()
    titles = " | ".join(panel["title"].lower() for panel in board["panels"])
    for wanted in ("ingest rate by source", "event-time lag by source", "merge latency",
                   "store reachable", "redis memory", "alert notices waiting",
                   "forwarding backlog", "bounce rate by configuration set",
                   "complaint rate by configuration set", "send to delivery"):  # fmt: skip
        assert wanted in titles, wanted
    variables = {variable["name"] for variable in board["templating"]["list"]}
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)\}?", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used - variables)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:  # on Grafana's 24-column grid
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0, panel["title"]


def named_metrics() -> set[str]:
    """Every metric the rules and the dashboard read."""
    names = {m for expr in rule_expressions() for m in METRIC.findall(expr)}
    names |= {m for _, expr in dashboard_queries() for m in METRIC.findall(expr)}
    return names


def sample_names(text: str) -> set[str]:
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_every_metric_the_dashboard_and_rules_read_is_in_a_scrape(
    redis_server: RedisServer,
    kafka_broker: TansuBroker,
    moto_server: MotoServer,
    tmp_path: Path,
) -> None:
    """Wired to Redis, Kafka (Tansu), SQS (moto), a forwarding receiver and an alert
    sink, then the in-memory store's own: the scrapes hold every name read."""
    # The in-memory store's figures (its own limit and size) come from a service on it.
    async with in_process(Settings(_env_file=None)) as (_, admin):
        memory = sample_names((await admin.get("/metrics")).text)
    wanted = named_metrics() - memory
    topic = f"observed-{time.monotonic_ns()}"
    await create_topic(kafka_broker.bootstrap_servers, topic, partitions=1)
    async with get_session().create_client(
        "sqs", endpoint_url=moto_server.url, region_name="us-east-1"
    ) as sqs:
        queue = (await sqs.create_queue(QueueName=f"observed-{time.monotonic_ns()}"))["QueueUrl"]
        rules = tmp_path / "rules.yaml"
        rules.write_text("rules:\n  - {name: bounces, kind: bounce_rate, warn: 0.05}\n")
        async with Receiver() as receiver:
            forward = tmp_path / "forward.yaml"
            forward.write_text(
                "subscriptions:\n"
                f"  - {{name: app, url: '{receiver.base}/hook', secret: a-secret-of-16-chars+}}\n"
            )
            settings = Settings(
                _env_file=None,
                redis_url=redis_server.url,
                kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
                kafka_topics=topic,
                kafka_group_id=f"g-{topic}",
                sqs_queue_urls=queue,
                aws_endpoint_url=moto_server.url,
                sqs_wait_time_s=1,
                forward_file=forward,
                alert_rules=rules,
                alert_webhooks=f"webhook={receiver.base}/alerts",
                alert_webhook_secret="a-webhook-secret-16+",
            )
            async with serving(settings) as server, httpx.AsyncClient() as http:
                await produce(
                    kafka_broker.bootstrap_servers, topic, keyed(simulated_records(5, seed=3))
                )
                body = ses.dumps(ses.send("observed-sqs", ["a@x.com"]))
                await sqs.send_message(QueueUrl=queue, MessageBody=body.decode())
                await http.post(
                    f"{server.base}/v1/events",
                    content=ses.dumps(
                        ses.send("observed-http", ["b@x.com"]),
                        ses.delivery("observed-http", ["b@x.com"], ses.SENT_AT + 900),
                    ),
                )

                async def everything_read() -> bool:
                    text = (await http.get(f"{server.admin}/metrics")).text
                    sources = {
                        dict(labels)["source"]
                        for family in text_string_to_metric_families(text)
                        for name, labels, *_ in family.samples
                        if name == "ses_tracker_records_total"
                    }
                    flowing = {"kafka", "sqs", "http"} <= sources and receiver.received != []
                    # Some figures come a poll after the records (the Kafka lag reads
                    # the partitions' ends): waited for, up to the deadline.
                    return flowing and wanted <= sample_names(text)

                with contextlib.suppress(TimeoutError):
                    await wait_until(everything_read, within_s=60)
                wired = (await http.get(f"{server.admin}/metrics")).text
    scraped = sample_names(wired) | memory
    missing = named_metrics() - scraped
    assert not missing, f"read by the rules or dashboard but never exported: {sorted(missing)}"


def test_the_names_read_are_found_by_the_pattern() -> None:
    """The check above is only as good as the names it finds."""
    names = named_metrics()
    assert {"ses_tracker_records_total", "ses_tracker_store_merge_seconds_bucket",
            "ses_tracker_redis_memory_used_bytes", "ses_tracker_forward_oldest_seconds",
            "ses_tracker_recipient_statuses_total"} <= names  # fmt: skip
    assert not any(":" in name for name in names)  # recording rules are not metrics read
