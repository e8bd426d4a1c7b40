"""Static checks of the scaled deployment (compose/k8s/ and compose/docker-compose.yml): every object valid
(kubernetes-validate, KEDA's CRD schemas), autoscaling that never removes a running training, grace
periods from the preemption design, worker probes, network policies, disruption budgets, pinned
images, and every setting the code reads set in both.
"""

from __future__ import annotations

import copy
import functools
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stockq.cli.stack import beat_argv
from stockq.settings import Settings
from tests.test_compose import (
    COMPOSE_FILE,
    K8S_DIR,
    ROOT,
    _containers,
    argv,
    celery_queues,
    config_maps,
    container_env,
    environment,
    flag_value,
    load_yaml,
    pod_spec,
    resolve,
)
from workers import app
from workers.celery_app import queue_of

KEDA_DIR = Path(__file__).parent / "data" / "keda"
KEDA_CRDS = {
    "ScaledJob": "keda.sh_scaledjobs.yaml",
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
}
# The preemption bound the training grace period must cover (workers/preemption.py): one epoch of the
# longest training step (a walk-forward origin's or the refit's epoch of a child on a GPU: well under 60 s
# with the default window and history) plus the checkpoint upload into its MLflow run (model + optimizer
# state, a few MB: 30 s on a slow link), with STOCKQ_CHECKPOINT_S=0 (checkpoint after every epoch).
EPOCH_BOUND_S = 60
CHECKPOINT_UPLOAD_BOUND_S = 30
# Settings deliberately left at their defaults in compose and k8s (why, one each).
DEFAULTED = {
    "api_host": "`stockq up` only: in containers gunicorn binds with -b",
    "api_url": "the CLI client's, not a server setting",
    "api_key": "the CLI client's, not a server setting",
    "flower_port": "`stockq up` only: the containers start Flower with --port",
    "flower_auth": "`stockq up` only: the containers pass FLOWER_BASIC_AUTH to Flower itself",
    "mlflow_ui_port": "`stockq up` only: the mlflow service runs `mlflow server --port=5000`",
    "train_history_days": "None means all history; no env value spells None (set it to limit history)",
}
# Variables the code reads that are no Settings field (beside the aliased ones).
EXTRA_ENV = {"MLFLOW_TRACKING_URI", "QDRANT_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"}
# stockq processes in compose: the services built from the project's image.
STOCKQ_SERVICES = {"api", "worker-cpu", "worker-training", "worker-agent", "flower", "exporter", "beat"}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return load_yaml(COMPOSE_FILE)["services"]


def _named(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _stockq_containers(manifests: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (doc, c)
        for doc in manifests
        for c in _containers(doc)
        if c["image"].split(":")[0] in {"stockq", "stockq-gpu"} and doc["metadata"]["name"] != "mlflow"
    ]


# ---------------------------------------------------------------------------------------- validity


def _strict(schema: Any) -> Any:
    """A CRD schema that rejects unknown fields, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _keda_validator(kind: str) -> jsonschema.Validator:
    crd = yaml.safe_load((KEDA_DIR / KEDA_CRDS[kind]).read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def test_every_k8s_object_is_valid(manifests: list[dict[str, Any]]) -> None:
    version = kubernetes_validate.utils.latest_version()
    kinds = set()
    for doc in manifests:
        kinds.add(doc["kind"])
        if doc["apiVersion"] == "keda.sh/v1alpha1":
            errors = list(_keda_validator(doc["kind"]).iter_errors(doc))
            assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
            if doc["kind"] == "ScaledJob":
                # The pod KEDA creates: its Job checked like any other object.
                meta = {"name": "training", "namespace": "stockq"}
                job = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": meta,
                    "spec": doc["spec"]["jobTargetRef"],
                }
                kubernetes_validate.validate(job, version, strict=True)
        else:
            kubernetes_validate.validate(doc, version, strict=True)
    assert {
        "ScaledJob",
        "ScaledObject",
        "TriggerAuthentication",
        "NetworkPolicy",
        "PodDisruptionBudget",
    } <= kinds
    # The validators do reject broken objects (so the checks above mean something).
    broken = copy.deepcopy(_named(manifests, "ScaledJob", "worker-training-gpu"))
    broken["spec"]["scalingStrategy"]["strategy"] = "eventually"
    assert list(_keda_validator("ScaledJob").iter_errors(broken))
    broken["spec"]["scalingStrategy"] = {"strategy": "accurate", "typo": 1}
    assert list(_keda_validator("ScaledJob").iter_errors(broken))
    with pytest.raises(kubernetes_validate.ValidationError):
        deployment = copy.deepcopy(_named(manifests, "Deployment", "worker-cpu"))
        deployment["spec"]["replica"] = 2
        kubernetes_validate.validate(deployment, version, strict=True)


# ------------------------------------------------------------------------------------- autoscaling


def test_keda_scales_each_worker_on_the_queues_it_consumes(manifests: list[dict[str, Any]]) -> None:
    auth = _named(manifests, "TriggerAuthentication", "stockq-redis")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "stockq-secrets", "key": "REDIS_PASSWORD"}
    ]
    scaled: dict[str, set[str]] = {}
    for doc in manifests:
        if doc["kind"] == "ScaledObject":
            target = _named(manifests, "Deployment", doc["spec"]["scaleTargetRef"]["name"])
            assert 1 <= doc["spec"]["minReplicaCount"] < doc["spec"]["maxReplicaCount"]
        elif doc["kind"] == "ScaledJob":
            target = doc
        else:
            continue
        (container,) = _containers(target)
        triggers = doc["spec"]["triggers"]
        for trigger in triggers:
            assert trigger["type"] == "redis" and trigger["authenticationRef"]["name"] == "stockq-redis"
            # The broker's Redis and database (KEDA's redis trigger: LLEN of the list named like the queue).
            assert trigger["metadata"]["address"].split(".")[0] == "redis"
            assert trigger["metadata"]["databaseIndex"] == "0"
        scaled[target["metadata"]["name"]] = {t["metadata"]["listName"] for t in triggers}
        assert scaled[target["metadata"]["name"]] == celery_queues(container["command"])
    assert scaled == {
        "worker-training-gpu": {"training"},
        "worker-cpu": {"inference", "ingest"},
        "worker-agent": {"agent"},
    }
    # Nothing else scales a worker (an HPA would fight KEDA's, and scale in busy training pods).
    assert not [d for d in manifests if d["kind"] == "HorizontalPodAutoscaler"]


def test_grace_periods_cover_preemption_and_running_jobs(
    manifests: list[dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    """Training: one epoch + its checkpoint upload (then it requeues itself). Other workers: the hard time
    limit of every task of theirs that is not requeued safely (ingest is idempotent and all-or-nothing)."""
    settings = Settings()
    assert settings.checkpoint_s <= EPOCH_BOUND_S  # a checkpoint at least once an epoch, as bounded
    preempt_s = EPOCH_BOUND_S + CHECKPOINT_UPLOAD_BOUND_S
    app.loader.import_default_modules()
    limits: dict[str, int] = {}
    for name, task in app.tasks.items():
        # tests/fault_tasks.py adds test-only `stockq.test.*` tasks to this app when its tests are collected
        if (
            name.startswith("stockq.")
            and not name.startswith("stockq.test.")
            and queue_of(name) not in {"training", "ingest"}
        ):
            queue = queue_of(name)
            limits[queue] = max(limits.get(queue, 0), int(task.time_limit or app.conf.task_time_limit))
    assert limits["inference"] == 150 and limits["agent"] == 330

    def needed(queues: set[str]) -> int:
        return max([preempt_s if "training" in queues else 0, *(limits.get(q, 0) for q in queues)])

    checked = 0
    for doc in manifests:
        for container in _containers(doc):
            queues = celery_queues(container.get("command"))
            if queues:
                checked += 1
                grace = pod_spec(doc)["terminationGracePeriodSeconds"]
                assert grace >= needed(queues), (doc["metadata"]["name"], grace, needed(queues))
    assert checked == 3
    assert (
        pod_spec(_named(manifests, "ScaledJob", "worker-training-gpu"))["terminationGracePeriodSeconds"]
        == 120
    )
    for name, service in services.items():
        queues = celery_queues(service.get("command"))
        if queues:
            grace = _seconds(service["stop_grace_period"])
            assert grace >= needed(queues), (name, grace, needed(queues))
    assert _seconds(services["worker-training"]["stop_grace_period"]) == 120


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


# ---------------------------------------------------------------------------------------- probes


def _ping_target(command: list[str]) -> str:
    """The node a `celery -A workers inspect ping -d <node>` probe asks."""
    args = argv(command[-1]) if command[:2] == ["sh", "-c"] else argv(command)
    assert args[:5] == ["celery", "-A", "workers", "inspect", "ping"], command
    return flag_value(args, "-d", "--destination") or ""


def test_workers_and_beat_answer_ping_on_their_own_node(
    manifests: list[dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    checked = set()
    for doc in manifests:
        for container in _containers(doc):
            args = argv(container.get("command"))
            if args[:1] != ["celery"] or not {"worker", "beat"} & set(args):
                continue
            node = flag_value(args, "-n", "--hostname") or ""
            assert node.endswith("@%h"), node
            expected = node.replace("%h", "$HOSTNAME")
            probes = ["livenessProbe"] + (["readinessProbe"] if doc["kind"] == "Deployment" else [])
            if "beat" in args:
                probes = ["livenessProbe", "startupProbe"]
            for probe in probes:
                assert _ping_target(container[probe]["exec"]["command"]) == expected, (doc["metadata"], probe)
            checked.add(doc["metadata"]["name"])
    assert checked == {"worker-cpu", "worker-agent", "worker-training-gpu", "beat"}
    for name in ("worker-cpu", "worker-training", "worker-agent", "beat"):
        node = flag_value(argv(services[name]["command"]), "-n", "--hostname") or ""
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"
        assert _ping_target(["sh", "-c", test[1].split("||")[0]]) == node.replace("%h", "$$HOSTNAME")


# ------------------------------------------------------------------------------------------ network


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector ({} selects everything; only the `In` operator is used here)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _reachable(
    policies: list[dict[str, Any]], pod: dict[str, str], port: int, peer: dict[str, str], namespace: str
) -> bool:
    """Whether a peer pod (labels, namespace) reaches `pod` on `port` under these ingress policies."""
    applying = [p for p in policies if _selects(p["spec"]["podSelector"], pod)]
    assert applying, f"no policy applies to {pod}"
    for policy in applying:
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in [p["port"] for p in rule["ports"]]:
                continue
            if "from" not in rule:
                return True
            for peer_rule in rule["from"]:
                ns = peer_rule.get("namespaceSelector")
                in_ns = (
                    namespace == "stockq"
                    if ns is None
                    else _selects(ns, {"kubernetes.io/metadata.name": namespace})
                )
                if in_ns and _selects(peer_rule.get("podSelector", {}), peer):
                    return True
    return False


def test_only_the_api_is_reachable_from_outside(manifests: list[dict[str, Any]]) -> None:
    policies = [d for d in manifests if d["kind"] == "NetworkPolicy"]
    pods = {}
    for doc in manifests:
        spec = pod_spec(doc)
        if spec is not None:
            labels = (doc["spec"]["jobTargetRef"] if doc["kind"] == "ScaledJob" else doc["spec"])["template"]
            ports = [p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])]
            pods[doc["metadata"]["name"]] = (labels["metadata"]["labels"], ports or [8080])
    stranger, backend = {"app": "anything"}, {"app": "worker-cpu", "stockq.io/backend": "true"}
    open_to_world = {
        name for name, (labels, ports) in pods.items()
        if any(_reachable(policies, labels, p, stranger, "elsewhere") for p in ports)
    }  # fmt: skip
    assert open_to_world == {"stockq-api"}
    # Inside: the stockq processes reach what they use; KEDA reads the broker; Prometheus scrapes.
    by_app = {labels["app"]: labels for labels, _ in pods.values()}
    assert _reachable(policies, by_app["redis"], 6379, backend, "stockq")
    assert _reachable(policies, by_app["redis"], 6379, {"app": "keda-operator"}, "keda")
    assert not _reachable(policies, by_app["redis"], 6379, stranger, "stockq")
    assert _reachable(policies, by_app["redis-cache"], 6379, backend, "stockq")
    assert _reachable(policies, by_app["mlflow"], 5000, backend, "stockq")
    assert _reachable(policies, by_app["qdrant"], 6333, {"app": "worker-agent"}, "stockq")
    assert not _reachable(policies, by_app["qdrant"], 6333, backend, "stockq")
    for app_name, port in {
        "stockq-exporter": 9808,
        "flower": 5555,
        "alertmanager": 9093,
        "redis": 9121,
    }.items():
        assert _reachable(policies, by_app[app_name], port, {"app": "prometheus"}, "monitoring"), app_name
    # Every stockq process carries the label the policies admit.
    for doc, _ in _stockq_containers(manifests):
        template = (doc["spec"]["jobTargetRef"] if doc["kind"] == "ScaledJob" else doc["spec"])["template"]
        assert template["metadata"]["labels"].get("stockq.io/backend") == "true", doc["metadata"]["name"]


def test_disruption_budgets_select_running_workloads(manifests: list[dict[str, Any]]) -> None:
    budgets = {d["metadata"]["name"]: d["spec"] for d in manifests if d["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {"stockq-api", "worker-cpu", "worker-agent"}
    for name, spec in budgets.items():
        (target,) = [d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
        assert (
            spec["selector"]["matchLabels"].items()
            <= target["spec"]["template"]["metadata"]["labels"].items()
        )
        # Never 0 allowed disruptions: a drain must be able to proceed.
        if "minAvailable" in spec:
            assert spec["minAvailable"] < target["spec"]["replicas"]
        else:
            assert spec["maxUnavailable"] >= 1


# ------------------------------------------------------------------------------------------- redis


def test_k8s_redis_has_a_password_and_a_memory_policy(manifests: list[dict[str, Any]]) -> None:
    def server(kind: str, name: str) -> tuple[list[str], dict[str, Any]]:
        (container,) = [c for c in _containers(_named(manifests, kind, name)) if c["name"] == "redis"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
        assert refs == {"REDIS_PASSWORD": "REDIS_PASSWORD", "REDISCLI_AUTH": "REDIS_PASSWORD"}
        args = container["args"]
        assert flag_value(args, "--requirepass") == "$(REDIS_PASSWORD)"
        return args, container["resources"]["limits"]

    args, limits = server("StatefulSet", "redis")
    assert (
        flag_value(args, "--maxmemory-policy") == "noeviction" and flag_value(args, "--appendonly") == "yes"
    )
    assert _mib(flag_value(args, "--maxmemory")) <= 0.8 * _mib(limits["memory"])
    args, limits = server("Deployment", "redis-cache")
    assert (
        flag_value(args, "--maxmemory-policy") == "allkeys-lru" and flag_value(args, "--appendonly") == "no"
    )
    assert _mib(flag_value(args, "--maxmemory")) <= 0.8 * _mib(limits["memory"])
    # Every stockq process reaches both through URLs carrying the Secret's password.
    configs = config_maps(manifests)
    for doc, container in _stockq_containers(manifests):
        env = container_env(doc, container, configs)
        assert env["STOCKQ_REDIS_URL"] == "redis://:<REDIS_PASSWORD>@redis:6379/0", doc["metadata"]["name"]
        assert env["STOCKQ_CACHE_REDIS_URL"] == "redis://:<REDIS_PASSWORD>@redis-cache:6379/0"


def _mib(size: str | None) -> float:
    match = re.fullmatch(r"(\d+)(mb|gb|Mi|Gi)", size or "")
    assert match, size
    return int(match.group(1)) * (1024 if match.group(2) in {"gb", "Gi"} else 1)


# ------------------------------------------------------------------------------------- images, env


def test_images_are_pinned(manifests: list[dict[str, Any]], services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    images = [c["image"] for d in manifests for c in _containers(d)]
    images += [resolve(s["image"]) for s in services.values()]
    assert len(images) > 20
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in {"", "latest"}, image
        if name in {"stockq", "stockq-gpu"}:
            assert tag == version, image


def _settings_env_names() -> set[str]:
    names = set(EXTRA_ENV)
    for field, info in Settings.model_fields.items():
        if field in DEFAULTED:
            continue
        if info.validation_alias is None:
            names.add(f"STOCKQ_{field.upper()}")
        else:
            assert set(info.validation_alias.choices) & EXTRA_ENV, field  # type: ignore[union-attr]
    return names


def test_every_setting_is_set_in_compose_and_k8s(
    manifests: list[dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    assert set(DEFAULTED) <= set(Settings.model_fields), "a DEFAULTED entry names no setting"
    wanted = _settings_env_names()
    assert {"STOCKQ_REDIS_URL", "STOCKQ_CACHE_REDIS_URL", "STOCKQ_SCHEDULE_INGEST"} <= wanted
    compose_env: set[str] = set()
    for name in STOCKQ_SERVICES:
        compose_env |= set(environment(services[name]))
    assert not wanted - compose_env, f"not set in compose: {sorted(wanted - compose_env)}"
    configs = config_maps(manifests)
    k8s_env: set[str] = set()
    for doc, container in _stockq_containers(manifests):
        k8s_env |= set(container_env(doc, container, configs))
        k8s_env |= {e["name"] for e in container.get("env", [])}  # optional references count as set
    assert not wanted - k8s_env, f"not set in k8s: {sorted(wanted - k8s_env)}"
    # And what they set parses: a worker's environment builds valid Settings.
    worker = _named(manifests, "Deployment", "worker-agent")
    env = container_env(worker, _containers(worker)[0], configs)
    parsed = Settings.model_validate({k.removeprefix("STOCKQ_").lower(): v for k, v in env.items()
                                      if k.startswith("STOCKQ_")})  # fmt: skip
    assert parsed.schedule_ingest == "30 22 * * 1-5" and parsed.cache_url.endswith("@redis-cache:6379/0")


# -------------------------------------------------------------------------------------------- beat


def test_one_redbeat_beat_in_compose_and_k8s(
    manifests: list[dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    beat = _named(manifests, "Deployment", "beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    (container,) = _containers(beat)
    local = [Path(beat_argv()[0]).name, *beat_argv()[1:6]]  # `stockq up --beat`
    for args in (argv(container["command"]), argv(services["beat"]["command"])):
        assert args[:6] == local
        # The Redis-locked scheduler: a second beat waits for the lock instead of double-scheduling.
        assert flag_value(args, "-S", "--scheduler") == "workers.scheduled.RedBeat"
        assert "--enable-remote-control" in args
    assert "deploy" not in services["beat"]
