"""Deployment files: Kubernetes manifests, docker-compose.yml, Dockerfile, the Prometheus configs.

Docker and a cluster are not available here, so the files are validated, not run: kustomize renders
every kustomization and each object it makes validates against Kubernetes' OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail) or the prometheus-operator CRD it belongs to;
docker-compose.yml validates against the Compose specification's JSON schema; promtool accepts the
Prometheus configurations. What no schema says is checked here by hand: the env the worker needs, its
probes, a volume for the RocksDB state, scraping exactly once, the Kafka client Secret's files, mounted
files that exist, pinned images, loopback-only ports and a health check on every compose service.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shutil
import subprocess
from importlib import metadata, resources
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OPERATOR = K8S / "prometheus-operator"
ENTRY_POINTS = {"base": BASE, "prometheus-operator": OPERATOR}
EXAMPLE_SECRET = BASE / "kafka-client-secret.example.yaml"
PROMETHEUSRULE = OPERATOR / "prometheusrule.yaml"
CRD_DIR = ROOT / "tests" / "schemas" / "prometheus-operator"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = DEPLOY / "prometheus"
LOCAL_PROMETHEUS = PROMETHEUS_DIR / "prometheus.yml"
COMPOSE_PROMETHEUS = DEPLOY / "compose" / "prometheus.yml"
KUSTOMIZE = ROOT / ".run" / "bin" / "kustomize"

# The Kubernetes version the manifests are validated for (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.33"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
NAMESPACE = "adoptstream"

REQUIRED_ENV = {
    "ADOPTSTREAM_BROKER",
    "ADOPTSTREAM_TOPIC",
    "ADOPTSTREAM_WEB_PORT",
    "ADOPTSTREAM_DATA_DIR",
    "ADOPTSTREAM_WEB_HOST",
}
# The worker's Kafka TLS/SASL settings whose values name a file (issue 16).
KAFKA_FILE_ENV = {
    "ADOPTSTREAM_SSL_CA_FILE",
    "ADOPTSTREAM_SSL_CERT_FILE",
    "ADOPTSTREAM_SSL_KEY_FILE",
    "ADOPTSTREAM_SASL_PASSWORD_FILE",
}
# All the TLS/SASL settings, Kafka's and the web endpoint's.
SECURITY_ENV = KAFKA_FILE_ENV | {
    "ADOPTSTREAM_SECURITY_PROTOCOL",
    "ADOPTSTREAM_SASL_MECHANISM",
    "ADOPTSTREAM_SASL_USERNAME",
    "ADOPTSTREAM_WEB_CONFIG_FILE",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

Object = dict[str, Any]


# -------------------------------------------------------------------------------------------- helpers
def kustomization_dirs() -> list[Path]:
    """Every directory under deploy/ with a kustomization file."""
    return sorted({p.parent for name in KUSTOMIZATION_NAMES for p in DEPLOY.rglob(name)})


def kustomization_of(directory: Path) -> Object:
    (path,) = [directory / name for name in KUSTOMIZATION_NAMES if (directory / name).is_file()]
    return yaml.safe_load(path.read_text())


@functools.cache
def render(directory: Path) -> tuple[Object, ...]:
    """The objects `kustomize build` makes of a kustomization."""
    if not KUSTOMIZE.exists():
        pytest.fail(f"{KUSTOMIZE} missing: `make kustomize` builds it (`make test` does that first)")
    result = subprocess.run(
        [str(KUSTOMIZE), "build", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kustomize build {directory.relative_to(ROOT)}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def of_kind(objects: tuple[Object, ...], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def the(objects: tuple[Object, ...], kind: str, name: str) -> Object:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def workloads(objects: tuple[Object, ...]) -> list[Object]:
    return [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def env_of(container: Object) -> dict[str, str]:
    return {item["name"]: str(item.get("value", "")) for item in container.get("env", [])}


def named_ports(container: Object) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container.get("ports", []) if "name" in port}


def probe_port(probe: Object, container: Object) -> int:
    port = probe["httpGet"]["port"]
    return named_ports(container)[port] if isinstance(port, str) else int(port)


def known_env_vars() -> set[str]:
    """The ADOPTSTREAM_* variables the worker reads.

    The TLS/SASL settings are being added to the worker at the same time as to these files: until the
    worker knows any of them, their announced names count as known; once it knows one, it must know
    every one the files use.
    """
    from adoptstream.runtime.config import WorkerConfig

    known = {WorkerConfig.env_var(name) for name in WorkerConfig.model_fields}
    return known if known & SECURITY_ENV else known | SECURITY_ENV


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------- schemas
def _strict(schema: Object) -> Object:
    """An OpenAPI v3 schema that refuses unknown fields, as the API server does with strict field
    validation (kubectl's default): every object schema with properties gets additionalProperties false
    unless it says otherwise or preserves unknown fields."""
    schema = copy.copy(schema)
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {name: _strict(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = _strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [_strict(sub) for sub in schema[key]]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    """(apiVersion, kind) -> a validator of the committed prometheus-operator CRDs' schemas.

    The CRDs' CEL rules (x-kubernetes-validations) are not evaluated."""
    validators = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(schema)
    return validators


def schema_errors(obj: Object) -> list[str]:
    """Why obj does not validate against its Kubernetes or CRD schema (empty when it does)."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    validator = crd_validators().get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if validator is not None:
        return [
            f"{where} at {'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{where} at {'/'.join(map(str, error.absolute_path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{where}: {error.message}"]
    return []


# ----------------------------------------------------------------------------------------- Kubernetes
def test_the_deploy_kustomizations_are_the_expected_ones() -> None:
    found = {path.relative_to(DEPLOY).as_posix() for path in kustomization_dirs()}
    assert found == {"k8s/base", "k8s/prometheus-operator", "rollouts", "alertmanager"}


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_kustomization_renders_objects_that_validate(directory: Path) -> None:
    objects = render(directory)
    assert objects, f"{directory}: renders nothing"
    errors = [error for obj in objects for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


def test_the_crd_copies_are_the_operators_crds() -> None:
    assert {kind for _, kind in crd_validators()} == {"PrometheusRule", "ServiceMonitor"}
    readme = (CRD_DIR / "README.md").read_text()
    for path in CRD_DIR.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        version = crd["metadata"]["annotations"]["operator.prometheus.io/version"]
        assert f"v{version}/example/prometheus-operator-crd/{path.name}" in readme, path.name


def test_every_manifest_file_is_used_by_a_kustomization() -> None:
    """A manifest no kustomization names is never applied; only the example Secret is meant that way."""
    named: set[Path] = set()
    for directory in kustomization_dirs():
        doc = kustomization_of(directory)
        entries = list(doc.get("resources", []))
        entries += [p["path"] for p in doc.get("patches", []) if "path" in p]
        named |= {(directory / entry).resolve() for entry in entries}
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name not in KUSTOMIZATION_NAMES}
    assert manifests - named == {EXAMPLE_SECRET.resolve()}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_namespaced_object_lands_in_the_adoptstream_namespace(entry: str) -> None:
    for obj in render(ENTRY_POINTS[entry]):
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_workloads_run_the_worker_with_its_configuration() -> None:
    found = workloads(render(BASE))
    assert found, "no Deployment/StatefulSet"
    known = known_env_vars()
    for doc in found:
        spec = doc["spec"]["template"]["spec"]
        grace = spec.get("terminationGracePeriodSeconds")
        assert grace is not None and 20 <= grace <= 120, f"terminationGracePeriodSeconds {grace}"
        for container in spec["containers"]:
            where = f"{doc['metadata']['name']}: container {container['name']}"
            env = env_of(container)
            assert set(env) >= REQUIRED_ENV, f"{where}: missing {sorted(REQUIRED_ENV - set(env))}"
            unknown = {name for name in env if name.startswith("ADOPTSTREAM_")} - known
            assert not unknown, f"{where}: the worker reads no {sorted(unknown)}"
            assert env["ADOPTSTREAM_BROKER"].startswith("kafka://"), where
            assert env.get("ADOPTSTREAM_REPLICATION_FACTOR") == "3", f"{where}: topics not replicated 3 times"
            assert (container.get("command") or []) + (container.get("args") or []) in (
                ["worker"],
                ["adoptstream", "worker"],
            ), f"{where}: does not run `adoptstream worker`"
            port = int(env["ADOPTSTREAM_WEB_PORT"])
            assert port in named_ports(container).values(), f"{where}: web port {port} not a containerPort"

            limits = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert limits.get(kind, {}).get("memory"), f"{where}: no memory {kind}"
            assert limits["requests"].get("cpu"), f"{where}: no cpu request"

            liveness, readiness = container.get("livenessProbe"), container.get("readinessProbe")
            assert liveness and liveness["httpGet"]["path"] == "/healthz", f"{where}: liveness not /healthz"
            assert readiness and readiness["httpGet"]["path"] == "/ready", f"{where}: readiness not /ready"
            for probe in (liveness, readiness, container.get("startupProbe")):
                if probe:
                    assert probe_port(probe, container) == port, f"{where}: a probe misses the web port"


def test_the_kafka_client_secret_is_mounted_where_the_settings_point() -> None:
    """The example Secret validates; every file setting names a key of it under the Secret's mount."""
    secret = yaml.safe_load(EXAMPLE_SECRET.read_text())
    assert not schema_errors(secret), schema_errors(secret)
    assert "EXAMPLE ONLY" in EXAMPLE_SECRET.read_text().splitlines()[0]
    assert all("PLACEHOLDER" in value for value in secret["stringData"].values())
    for doc in workloads(render(BASE)):
        spec = doc["spec"]["template"]["spec"]
        secret_volumes = {
            v["name"]
            for v in spec.get("volumes", [])
            if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
        }
        for container in spec["containers"]:
            env = env_of(container)
            assert env.get("ADOPTSTREAM_SECURITY_PROTOCOL") in ("SSL", "SASL_SSL"), "Kafka without TLS"
            (mount,) = [m for m in container.get("volumeMounts", []) if m["name"] in secret_volumes]
            assert mount.get("readOnly") is True
            files = {name: env[name] for name in KAFKA_FILE_ENV if name in env}
            assert "ADOPTSTREAM_SSL_CA_FILE" in files, "brokers' certificates checked against no CA"
            for name, value in files.items():
                directory, key = value.rsplit("/", 1)
                assert directory == mount["mountPath"].rstrip("/"), f"{name}={value} is not in the Secret"
                assert key in secret["stringData"], f"{name}: the example Secret has no {key}"


def test_web_host_all_interfaces_is_explained() -> None:
    path = BASE / "statefulset.yaml"
    for doc in workloads(render(BASE)):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if env_of(container)["ADOPTSTREAM_WEB_HOST"] != "0.0.0.0":
                continue
            lines = path.read_text().splitlines()
            at = next(i for i, line in enumerate(lines) if "ADOPTSTREAM_WEB_HOST" in line)
            comment = " ".join(line for line in lines[max(0, at - 6) : at] if line.strip().startswith("#"))
            assert "0.0.0.0" in comment, f"{path}: say in a comment why the worker listens on 0.0.0.0"


def test_data_dir_is_on_a_persistent_volume() -> None:
    for doc in workloads(render(BASE)):
        spec = doc["spec"]["template"]["spec"]
        claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        claims |= {v["name"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        for container in spec["containers"]:
            data_dir = env_of(container)["ADOPTSTREAM_DATA_DIR"]
            mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container.get("volumeMounts", [])}
            assert data_dir.rstrip("/") in mounts, f"nothing mounted at {data_dir}"
            assert mounts[data_dir.rstrip("/")] in claims, f"{data_dir} is not on a PVC"


def test_statefulset_has_a_headless_service_and_a_disruption_budget() -> None:
    objects = render(BASE)
    services = {doc["metadata"]["name"]: doc for doc in of_kind(objects, "Service")}
    budgets = of_kind(objects, "PodDisruptionBudget")
    statefulsets = of_kind(objects, "StatefulSet")
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
    for doc in of_kind(render(BASE), "StatefulSet"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            items = {item["name"]: item for item in container.get("env", [])}
            item = items.get("ADOPTSTREAM_INSTANCE_ID")
            assert item, f"container {container['name']} sets no ADOPTSTREAM_INSTANCE_ID"
            assert item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"


def test_workers_are_scraped_exactly_once_per_setup() -> None:
    """Annotations in the base; in the operator overlay a ServiceMonitor and the annotations off."""
    for doc in workloads(render(BASE)):
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true"
        container = doc["spec"]["template"]["spec"]["containers"][0]
        assert annotations.get("prometheus.io/port") == env_of(container)["ADOPTSTREAM_WEB_PORT"]
        assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"

    objects = render(OPERATOR)
    for doc in workloads(objects):
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "false", "scraped by annotation and ServiceMonitor"
    (monitor,) = of_kind(objects, "ServiceMonitor")
    services = [
        s
        for s in of_kind(objects, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert services, "the ServiceMonitor selects no Service"
    port_names = {p["name"] for s in services for p in s["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names, f"endpoint port {endpoint['port']} is no Service port"
        drops = [r for r in endpoint.get("relabelings", []) if r.get("action") == "labeldrop"]
        assert drops and re.fullmatch(drops[0]["regex"], "pod"), "keeps the per-pod `pod` label"


def test_the_prometheusrule_is_generated_from_the_rule_files() -> None:
    generator = load_script(K8S / "prometheusrule.py")
    assert PROMETHEUSRULE.read_text() == generator.render(), "run `make k8s-rules`"
    rule_files = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
    groups = [group for path in rule_files for group in yaml.safe_load(path.read_text())["groups"]]
    (rule,) = of_kind(render(OPERATOR), "PrometheusRule")
    assert rule["spec"]["groups"] == groups


def test_configmaps_carry_the_rollout_plans_and_the_alertmanager_routes() -> None:
    objects = render(BASE)
    plans = the(objects, "ConfigMap", "adoptstream-rollouts")["data"]
    assert plans == {p.name: p.read_text() for p in sorted((DEPLOY / "rollouts").glob("*.yaml"))}
    routes = the(objects, "ConfigMap", "adoptstream-alertmanager")["data"]
    alertmanager = DEPLOY / "alertmanager"
    templates = sorted((alertmanager / "templates").glob("*.tmpl"))
    assert routes == {
        "alertmanager.yml": (alertmanager / "alertmanager.yml").read_text(),
        **{p.name: p.read_text() for p in templates},
    }


# ------------------------------------------------------------------------------------------ compose
def compose() -> Object:
    return yaml.safe_load(COMPOSE.read_text())


def project_image() -> str:
    return f"adoptstream:{metadata.version('adoptstream')}"


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
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


def test_kubernetes_image_is_the_project_version() -> None:
    (image,) = {
        c["image"] for w in workloads(render(BASE)) for c in w["spec"]["template"]["spec"]["containers"]
    }
    assert image == project_image()


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
