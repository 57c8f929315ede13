"""Deployment files: Kubernetes manifests, docker-compose.yml, Dockerfile, the Prometheus configs.

Docker and a cluster are not available here, so these are static checks: the documents parse, every
workload is configured the way the worker needs (env, probes, resources, a volume for the RocksDB
state, scraping exactly once), docker-compose.yml validates against the Compose specification's JSON
schema and mounts files that exist, pins its images, publishes ports on loopback only and checks the
health of every service, and promtool accepts the Prometheus configurations.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
LOCAL_PROMETHEUS = PROMETHEUS_DIR / "prometheus.yml"
COMPOSE_PROMETHEUS = ROOT / "deploy" / "compose" / "prometheus.yml"

REQUIRED_ENV = {
    "ADOPTSTREAM_BROKER",
    "ADOPTSTREAM_TOPIC",
    "ADOPTSTREAM_WEB_PORT",
    "ADOPTSTREAM_DATA_DIR",
    "ADOPTSTREAM_WEB_HOST",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
Object = dict[str, Any]
MANIFEST_FILES = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted(K8S.rglob("kustomization.yaml"))


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in MANIFEST_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def is_patch(path: Path) -> bool:
    """Files a kustomization uses as patches: partial objects, not resources."""
    for kustomization in KUSTOMIZATIONS:
        doc = yaml.safe_load(kustomization.read_text())
        for patch in doc.get("patches", []) + doc.get("patchesStrategicMerge", []):
            name = patch.get("path") if isinstance(patch, dict) else patch
            if name and (kustomization.parent / name).resolve() == path.resolve():
                return True
    return False


def resources() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, doc in k8s_docs() if not is_patch(path)]


def workloads() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, doc in resources() if doc["kind"] in WORKLOAD_KINDS]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: str(item.get("value", "")) for item in container.get("env", [])}


def named_ports(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container.get("ports", []) if "name" in port}


def probe_port(probe: dict[str, Any], container: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    return named_ports(container)[port] if isinstance(port, str) else int(port)


def known_env_vars() -> set[str] | None:
    """The ADOPTSTREAM_* variables the worker reads (None while its config module is not importable)."""
    try:
        from adoptstream.runtime.config import ENV_VARS
    except ImportError:
        return None
    return set(ENV_VARS.values())


# ----------------------------------------------------------------------------------------- Kubernetes
def test_every_manifest_parses_and_names_itself() -> None:
    docs = k8s_docs()
    assert docs, "no manifests under deploy/k8s"
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion/kind missing"
        assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without a name"


def test_kustomizations_list_existing_files_and_every_resource() -> None:
    assert (K8S / "kustomization.yaml") in KUSTOMIZATIONS
    listed: set[Path] = set()
    for kustomization in KUSTOMIZATIONS:
        doc = yaml.safe_load(kustomization.read_text())
        assert doc["kind"] == "Kustomization"
        entries = list(doc.get("resources", []))
        entries += [p["path"] if isinstance(p, dict) else p for p in doc.get("patches", []) if "path" in p]
        for entry in entries:
            target = (kustomization.parent / entry).resolve()
            assert target.exists(), f"{kustomization}: {entry} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), (
                    f"{kustomization}: {entry} is no kustomization"
                )
            listed.add(target)
    forgotten = [p for p in MANIFEST_FILES if p.resolve() not in listed]
    assert not forgotten, f"manifests no kustomization applies: {forgotten}"


def test_workloads_run_the_worker_with_its_configuration() -> None:
    found = workloads()
    assert found, "no Deployment/StatefulSet"
    known = known_env_vars()
    for path, doc in found:
        spec = doc["spec"]["template"]["spec"]
        grace = spec.get("terminationGracePeriodSeconds")
        assert grace is not None and 20 <= grace <= 120, f"{path}: terminationGracePeriodSeconds {grace}"
        for container in spec["containers"]:
            where = f"{path.name}: container {container['name']}"
            env = env_of(container)
            assert set(env) >= REQUIRED_ENV, f"{where}: missing {sorted(REQUIRED_ENV - set(env))}"
            if known is not None:
                unknown = {name for name in env if name.startswith("ADOPTSTREAM_")} - known
                assert not unknown, f"{where}: the worker reads no {sorted(unknown)}"
            assert env["ADOPTSTREAM_BROKER"].startswith("kafka://"), where
            assert (container.get("command") or []) + (container.get("args") or []) in (
                ["worker"],
                ["adoptstream", "worker"],
            ), f"{where}: does not run `adoptstream worker`"
            port = int(env["ADOPTSTREAM_WEB_PORT"])
            assert port in named_ports(container).values(), f"{where}: web port {port} not a containerPort"

            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert resources.get(kind, {}).get("memory"), f"{where}: no memory {kind}"
            assert resources["requests"].get("cpu"), f"{where}: no cpu request"

            liveness, readiness = container.get("livenessProbe"), container.get("readinessProbe")
            assert liveness and liveness["httpGet"]["path"] == "/healthz", f"{where}: liveness not /healthz"
            assert readiness and readiness["httpGet"]["path"] == "/ready", f"{where}: readiness not /ready"
            for probe in (liveness, readiness, container.get("startupProbe")):
                if probe:
                    assert probe_port(probe, container) == port, f"{where}: a probe misses the web port"


def test_web_host_all_interfaces_is_explained() -> None:
    for path, doc in workloads():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if env_of(container)["ADOPTSTREAM_WEB_HOST"] != "0.0.0.0":
                continue
            lines = path.read_text().splitlines()
            at = next(i for i, line in enumerate(lines) if "ADOPTSTREAM_WEB_HOST" in line)
            comment = " ".join(line for line in lines[max(0, at - 6) : at] if line.strip().startswith("#"))
            assert "0.0.0.0" in comment, f"{path}: say in a comment why the worker listens on 0.0.0.0"


def test_data_dir_is_on_a_persistent_volume() -> None:
    for path, doc in workloads():
        spec = doc["spec"]["template"]["spec"]
        claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        claims |= {v["name"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        for container in spec["containers"]:
            data_dir = env_of(container)["ADOPTSTREAM_DATA_DIR"]
            mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container.get("volumeMounts", [])}
            assert data_dir.rstrip("/") in mounts, f"{path}: nothing mounted at {data_dir}"
            assert mounts[data_dir.rstrip("/")] in claims, f"{path}: {data_dir} is not on a PVC"


def test_statefulset_has_a_headless_service_and_a_disruption_budget() -> None:
    docs = resources()
    services = {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == "Service"}
    budgets = [doc for _, doc in docs if doc["kind"] == "PodDisruptionBudget"]
    statefulsets = [doc for _, doc in docs if doc["kind"] == "StatefulSet"]
    assert statefulsets, "the workers need a StatefulSet (a stable data dir per pod)"
    for sts in statefulsets:
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        selector = sts["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        service = services.get(sts["spec"].get("serviceName"))
        assert service, f"StatefulSet {sts['metadata']['name']}: serviceName names no Service"
        assert service["spec"].get("clusterIP") == "None", "the StatefulSet's Service must be headless"
        assert service["spec"]["selector"].items() <= pod_labels.items(), "Service selects no worker"
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()]
        assert covering, "no PodDisruptionBudget covers the workers"
        assert any("maxUnavailable" in b["spec"] or "minAvailable" in b["spec"] for b in covering)
        assert sts["spec"].get("podManagementPolicy") == "Parallel"


def test_statefulset_pods_are_static_group_members_named_after_the_pod() -> None:
    """ADOPTSTREAM_INSTANCE_ID from the pod name: stable across restarts, unique among running pods."""
    for path, doc in workloads():
        if doc["kind"] != "StatefulSet":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            items = {item["name"]: item for item in container.get("env", [])}
            item = items.get("ADOPTSTREAM_INSTANCE_ID")
            assert item, f"{path}: container {container['name']} sets no ADOPTSTREAM_INSTANCE_ID"
            assert item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", path


def test_workers_are_scraped_exactly_once_per_setup() -> None:
    """Annotations in the base, a ServiceMonitor in the operator overlay which turns the annotations off."""
    base = [doc for path, doc in workloads() if path.parent == K8S]
    assert base
    for doc in base:
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true"
        container = doc["spec"]["template"]["spec"]["containers"][0]
        assert annotations.get("prometheus.io/port") == env_of(container)["ADOPTSTREAM_WEB_PORT"]
        assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"
    monitors = [(path, doc) for path, doc in resources() if doc["kind"] == "ServiceMonitor"]
    for path, monitor in monitors:
        overlay = yaml.safe_load((path.parent / "kustomization.yaml").read_text())
        patches = [yaml.safe_load((path.parent / p["path"]).read_text()) for p in overlay.get("patches", [])]
        turned_off = [
            p
            for p in patches
            if p["kind"] == "StatefulSet"
            and p["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/scrape") == "false"
        ]
        assert turned_off, f"{path}: the overlay scrapes the workers by annotation and ServiceMonitor"
        services = [doc for _, doc in resources() if doc["kind"] == "Service"]
        port_names = {p["name"] for s in services for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names, (
                f"{path}: endpoint port {endpoint['port']} is no Service port"
            )
            drops = [r for r in endpoint.get("relabelings", []) if r.get("action") == "labeldrop"]
            assert drops and re.fullmatch(drops[0]["regex"], "pod"), f"{path}: keeps the per-pod `pod` label"


# ------------------------------------------------------------------------------------------ compose
def compose() -> Object:
    return yaml.safe_load(COMPOSE.read_text())


def project_image() -> str:
    return f"adoptstream:{metadata.version('adoptstream')}"


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_compose_references_existing_files() -> None:
    doc = compose()
    services = doc["services"]
    assert {"kafka", "prometheus", "alertmanager", "grafana"} <= set(services)
    declared_volumes = set(doc.get("volumes") or {})
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} missing"
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source, bind = volume.get("source", ""), volume.get("type") == "bind"
            else:
                source = volume.split(":")[0]
                bind = source.startswith((".", "/", "~"))
            if bind:
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which does not exist"
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (ROOT / path).is_file(), f"{name}: env_file {path} missing"
        depends = service.get("depends_on") or []
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":") if "/" not in image.rpartition(":")[2] else (image, "", "")
        assert repository and tag and tag != "latest", f"{name}: image {image!r} has no pinned tag"
        if "build" in service:
            assert image == project_image(), f"{name}: builds {image}, not the project's version"


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {port} is published on every interface"


def test_every_compose_service_has_a_health_check() -> None:
    for name, service in compose()["services"].items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no health check"
        assert check["test"] != ["NONE"], f"{name}: health check turned off"


def test_compose_workers_and_their_volumes() -> None:
    services = compose()["services"]
    workers = {
        name: s for name, s in services.items() if "ADOPTSTREAM_BROKER" in (s.get("environment") or {})
    }
    assert 1 <= len(workers) <= 3, sorted(workers)
    known = known_env_vars()
    data_volumes = set()
    for name, worker in workers.items():
        env = {k: str(v) for k, v in worker["environment"].items()}
        assert set(env) >= REQUIRED_ENV, f"{name}: missing {sorted(REQUIRED_ENV - set(env))}"
        if known is not None:
            assert {k for k in env if k.startswith("ADOPTSTREAM_")} <= known, name
        host = re.fullmatch(r"kafka://([^:]+):\d+", env["ADOPTSTREAM_BROKER"])
        assert host and host.group(1) in services, f"{name}: broker {env['ADOPTSTREAM_BROKER']}"
        # A laptop: plaintext to the one broker of this file, whose topics cannot have more replicas.
        assert env.get("ADOPTSTREAM_SECURITY_PROTOCOL", "PLAINTEXT") == "PLAINTEXT", name
        assert env.get("ADOPTSTREAM_REPLICATION_FACTOR", "1") == "1", name
        mounts = {v.split(":")[1]: v.split(":")[0] for v in worker.get("volumes", [])}
        assert env["ADOPTSTREAM_DATA_DIR"] in mounts, f"{name}: data dir not on a volume"
        data_volumes.add(mounts[env["ADOPTSTREAM_DATA_DIR"]])
    assert len(data_volumes) == len(workers), "workers must not share a RocksDB data dir"


def test_compose_prometheus_scrapes_every_worker_once() -> None:
    services = compose()["services"]
    workers = {name for name, s in services.items() if "ADOPTSTREAM_BROKER" in (s.get("environment") or {})}
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "adoptstream"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert sorted(t.split(":")[0] for t in targets) == sorted(workers)
    rules_mount = mounts.get("/etc/prometheus/rules")
    assert rules_mount and (ROOT / rules_mount).resolve() == (PROMETHEUS_DIR / "rules").resolve()
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_dockerfile_runs_the_worker_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert re.search(r'^ENTRYPOINT \[.*"adoptstream"\]$', text, re.M)
    assert re.search(r'^CMD \["worker"\]$', text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and not user[-1].startswith(("root", "0")), user
    env = dict(re.findall(r"(ADOPTSTREAM_\w+)=(\S+)", text))
    assert re.search(rf"^EXPOSE {env['ADOPTSTREAM_WEB_PORT']}$", text, re.M)
    assert re.search(rf"^VOLUME \[\"{env['ADOPTSTREAM_DATA_DIR']}\"\]$", text, re.M)
    assert "/healthz" in text.split("HEALTHCHECK", 1)[1]


# ----------------------------------------------------------------------------------------- Prometheus
def test_local_prometheus_config_matches_the_local_setup() -> None:
    config = yaml.safe_load(LOCAL_PROMETHEUS.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "adoptstream"
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["127.0.0.1:6066"]
    assert config["rule_files"] == ["rules/*.yml"]
    managers = config["alerting"]["alertmanagers"]
    assert [t for m in managers for sc in m["static_configs"] for t in sc["targets"]] == ["127.0.0.1:9093"]


def checkable_copy(config_path: Path, rules_dir: Path, tmp_path: Path) -> Path:
    """A copy of the config whose rule_files name the repository's rule files that exist (none: dropped)."""
    config = yaml.safe_load(config_path.read_text())
    existing = sorted(str(p) for p in rules_dir.glob("*.yml"))
    if existing:
        config["rule_files"] = existing
    else:
        config.pop("rule_files", None)
    path = tmp_path / config_path.name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH (make test installs it)")
@pytest.mark.parametrize("config", [LOCAL_PROMETHEUS, COMPOSE_PROMETHEUS], ids=["local", "compose"])
def test_promtool_accepts_the_prometheus_config(config: Path, tmp_path: Path) -> None:
    path = checkable_copy(config, PROMETHEUS_DIR / "rules", tmp_path)
    result = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
