"""The deployment files, checked by the tools that would refuse them, and against the
service they deploy (its settings, rules, commands and drain time)."""

from __future__ import annotations

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


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            (doc,) = documents(path)
            found[path.name] = doc
    return found


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


def test_kubernetes_manifests_pass_strict_schema_validation() -> None:
    paths = [str(KUBERNETES / name) for name in manifests()]
    result = tool("kubernetes-validate", "--strict", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_applies_everything_but_the_example_secret() -> None:
    (kustomization,) = documents(KUBERNETES / "kustomization.yaml")
    assert set(kustomization["resources"]) == set(manifests()) - {"secret.example.yaml"}


def test_deployment_probes_drain_and_hardening() -> None:
    found = manifests()
    deployment = found["deployment.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["enableServiceLinks"] is False
    # As shipped: no Kubernetes API token, and no start without the Secret.
    assert pod["automountServiceAccountToken"] is False
    (secret_ref,) = [e["secretRef"] for e in container["envFrom"] if "secretRef" in e]
    assert secret_ref["optional"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + DRAIN_S
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found["service.yaml"]["spec"]["selector"].items() <= pod_labels.items()
    assert found["pdb.yaml"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = found["hpa.yaml"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (
        hpa["minReplicas"] >= 2 and found["pdb.yaml"]["spec"]["minAvailable"] < hpa["minReplicas"]
    )


def test_the_shipped_overlay_matches_the_default_aws_path() -> None:
    found = manifests()
    config = found["configmap.yaml"]["data"]
    secret = found["secret.example.yaml"]["stringData"]
    assert config["SES_TRACKER_SQS_QUEUE_URLS"].startswith("https://sqs.")
    assert "SES_TRACKER_KAFKA_BOOTSTRAP_SERVERS" not in config  # an alternative, commented
    assert "SES_TRACKER_REDIS_URL" in secret and "SES_TRACKER_REDIS_URL" not in config
    ingress = found["ingress.yaml"]
    assert (
        ingress["spec"]["tls"]
        and ingress["spec"]["rules"][0]["host"] in ingress["spec"]["tls"][0]["hosts"]
    )
    (kustomization,) = documents(KUBERNETES / "kustomization.yaml")
    image = found["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert kustomization["images"][0]["name"] == image.split(":")[0]


def test_configuration_names_only_settings_the_service_has() -> None:
    found = manifests()
    config = found["configmap.yaml"]["data"]
    secret = found["secret.example.yaml"]["stringData"]
    # AWS_REGION is botocore's; FORWARDED_ALLOW_IPS is uvicorn's (trusted proxies).
    known = setting_names() | {"AWS_REGION", "FORWARDED_ALLOW_IPS"}
    assert set(config) <= known and set(secret) <= known
    assert not set(config) & {"SES_TRACKER_API_TOKEN", "SES_TRACKER_ALERT_WEBHOOKS",
                              "SES_TRACKER_ALERT_WEBHOOK_SECRET",
                              "SES_TRACKER_FIREHOSE_ACCESS_KEY"}  # fmt: skip
    # The rules file the ConfigMap mounts is where the settings look, and valid.
    mount = found["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    rules_dir = next(m["mountPath"] for m in mount if m["name"] == "rules")
    assert config["SES_TRACKER_ALERT_RULES"] == f"{rules_dir}/rules.yaml"
    rules = parse_rules(found["rules-configmap.yaml"]["data"]["rules.yaml"], "rules-configmap")
    assert rules == default_rules()


def test_the_cluster_overlay_turns_cluster_mode_on_in_the_base_configmap() -> None:
    overlay = KUBERNETES / "cluster"
    (kustomization,) = documents(overlay / "kustomization.yaml")
    assert kustomization["resources"] == ["../"]
    (patch_path,) = [overlay / p["path"] for p in kustomization["patches"]]
    result = tool("kubernetes-validate", "--strict", str(patch_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (patch,) = documents(patch_path)
    base = manifests()["configmap.yaml"]
    assert (patch["kind"], patch["metadata"]["name"]) == (base["kind"], base["metadata"]["name"])
    assert set(patch["data"]) <= setting_names()
    settings = Settings(_env_file=None, redis_url="redis://node:6379/0", **{
        name.removeprefix("SES_TRACKER_").lower(): value for name, value in patch["data"].items()
    })  # fmt: skip
    assert settings.redis_cluster and settings.redis_slot_group_count() == 16


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


def test_the_eventbridge_rule_takes_only_this_configuration_sets_events() -> None:
    template = yaml.load((DEPLOY / "aws" / "ses-events.yaml").read_text(), Loader=_CfnLoader)
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
    config = manifests()["configmap.yaml"]["data"]
    assert exposure({**image, **config}) is None
    example = env_file(DEPLOY / "ses-tracker.env.example")
    assert example["SES_TRACKER_HOST"] == "0.0.0.0" and exposure(example) is None
    # And with nothing set the same image would refuse to start.
    assert exposure({"SES_TRACKER_HOST": "0.0.0.0"}) is not None


def test_the_ingress_host_is_the_public_urls_and_only_the_proxy_is_trusted() -> None:
    found = manifests()
    config = found["configmap.yaml"]["data"]
    public_host = config["SES_TRACKER_PUBLIC_URL"].split("//", 1)[1].split("/")[0]
    assert found["ingress.yaml"]["spec"]["rules"][0]["host"] == public_host
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


def test_the_systemd_unit_keeps_a_state_directory_under_strict_protection() -> None:
    """#29: with ProtectSystem=strict the alert state directory must be one systemd
    makes writable (StateDirectory=), else SES_TRACKER_ALERT_STATE_DIR fails."""
    unit = (DEPLOY / "systemd" / "ses-tracker.service").read_text()
    directives = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert directives["ProtectSystem"] == "strict"
    assert directives["StateDirectory"] == "ses-tracker"


def test_the_ingress_names_its_class() -> None:
    (ingress,) = documents(DEPLOY / "kubernetes" / "ingress.yaml")
    assert ingress["spec"]["ingressClassName"]
