"""Static checks of compose/: the compose file against the Compose Specification schema, and the wiring
between compose services, Prometheus, Grafana, the Kubernetes manifests and the metrics the API exposes.

There is no Docker engine on the test machines, so these are the checks `docker compose config`,
`promtool check rules` and Grafana's provisioning would otherwise make, plus the cross-file consistency
none of those tools see (a scrape target that is no service, an alert on a metric nobody exposes).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from stockq.settings import Settings
from workers.celery_app import QUEUES

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
CPU_OVERRIDE = COMPOSE_DIR / "docker-compose.cpu.yml"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
PROMETHEUS_DIR = COMPOSE_DIR / "prometheus"
GRAFANA_DIR = COMPOSE_DIR / "grafana"
K8S_DIR = COMPOSE_DIR / "k8s"

# The API's /metrics (webapp/metrics.py, prometheus-flask-exporter): per-process HTTP figures only.
API_COUNTERS = {"stockq_http_request_total", "stockq_http_request_exceptions_total"}
API_HISTOGRAMS = {"stockq_http_request_duration_seconds"}
API_METRICS = API_COUNTERS | API_HISTOGRAMS
# The exporter's /metrics (workers/exporter.py): backend-wide figures, read once from Redis and MLflow.
EXPORTER_COUNTERS = {
    "stockq_jobs_submitted_total",
    "stockq_jobs_finished_total",
    "stockq_job_requeues_total",
    "redis_cache_hit_total",
    "redis_cache_miss_total",
    "stockq_model_cache_hits_total",
    "stockq_model_cache_misses_total",
    "stockq_semantic_cache_hits_total",
    "stockq_semantic_cache_misses_total",
}
EXPORTER_GAUGES = {
    "stockq_queue_length",
    "stockq_queue_oldest_age_seconds",
    "stockq_queue_unacked",
    "stockq_workers",
    "stockq_worker_up",
    "stockq_jobs",
    "stockq_jobs_retried",
    "stockq_jobs_overdue",
    "stockq_deadletter_size",
    "stockq_training_epoch_seconds",
    "stockq_training_loss",
    "stockq_model_age_seconds",
    "stockq_redis_up",
    "stockq_redis_memory_used_bytes",
    "stockq_redis_memory_limit_bytes",
}
EXPORTER_HISTOGRAMS = {"stockq_job_duration_seconds"}
EXPORTER_METRICS = EXPORTER_COUNTERS | EXPORTER_GAUGES | EXPORTER_HISTOGRAMS
# Flower 2.x's own metrics, redis_exporter's redis_up, and Prometheus' synthetic `up`.
FLOWER_COUNTERS = {"flower_events_total"}
FLOWER_GAUGES = {"flower_worker_online", "flower_worker_number_of_currently_executing_tasks"}
FLOWER_HISTOGRAMS = {"flower_task_runtime_seconds"}
OTHER_METRICS = {"up", "redis_up"}
HISTOGRAMS = API_HISTOGRAMS | EXPORTER_HISTOGRAMS | FLOWER_HISTOGRAMS
KNOWN_METRICS = (
    API_METRICS | EXPORTER_METRICS | FLOWER_COUNTERS | FLOWER_GAUGES | FLOWER_HISTOGRAMS | OTHER_METRICS
)

EXPECTED_QUEUES = {"training", "inference", "agent", "ingest"}


# ----------------------------------------------------------------------------------------------- helpers


class _ComposeLoader(yaml.SafeLoader):
    """safe_load plus Compose's merge tags (`!reset`, `!override`), read as their plain value."""


def _compose_tag(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeLoader.add_multi_constructor("!", _compose_tag)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_ComposeLoader)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}")


def variables(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, default-or-message) for each ${...} in a compose file; $$ is an escaped $."""
    return [m.groups(default="") for m in _VAR.finditer(text.replace("$$", ""))]  # type: ignore[misc]


def resolve(value: str) -> str:
    """A compose string with every variable at its default (required ones as <NAME>)."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        return arg if op in {"-", ":-"} else f"<{name}>"

    return _VAR.sub(sub, value).replace("$$", "$")


def argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def flag_value(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def celery_queues(command: str | list[str] | None) -> set[str] | None:
    """The queues a `celery -A workers worker -Q a,b` command consumes, or None when it is no worker."""
    args = argv(command)
    if len(args) < 4 or args[0] != "celery" or "worker" not in args:
        return None
    queues = flag_value(args, "-Q", "--queues")
    return set(resolve(queues).split(",")) if queues else set()


_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers, ranges, grouping and functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # the exponent of 1e-9, not a name
            continue
        if text[match.end() :].lstrip().startswith("(") or match.group(0).lower() in _PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def known(expr: str) -> set[str]:
    """The metrics of `expr`, asserting there is at least one and all are known."""
    names = {base_metric(n) for n in metric_names(expr)}
    assert names, f"no metric in {expr!r}"
    assert names <= KNOWN_METRICS, f"unknown metric(s) {sorted(names - KNOWN_METRICS)} in {expr!r}"
    for name in metric_names(expr):
        if base_metric(name) in HISTOGRAMS:
            assert name != base_metric(name), f"histogram {name} used without _bucket/_sum/_count"
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def workers(services: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    found = {name: celery_queues(svc.get("command")) for name, svc in services.items()}
    return {name: queues for name, queues in found.items() if queues is not None}


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


# ------------------------------------------------------------------------------------- self-checks


def test_helpers_find_what_they_should() -> None:
    assert metric_names('sum by (type) (rate(stockq_jobs_finished_total{status="failed"}[15m])) > 1e-9') == {
        "stockq_jobs_finished_total"
    }
    expr = "histogram_quantile(0.99, sum by (le) (rate(stockq_http_request_duration_seconds_bucket[5m])))"
    assert known(expr) == {"stockq_http_request_duration_seconds"}
    with pytest.raises(AssertionError, match="unknown metric"):
        known("rate(http_requests_total[5m])")
    with pytest.raises(AssertionError, match="without _bucket"):
        known("rate(stockq_job_duration_seconds[5m])")
    assert celery_queues(["celery", "-A", "workers", "worker", "-Q", "a,b", "-c", "2"]) == {"a", "b"}
    assert celery_queues("celery -A workers flower --port=5555") is None
    assert variables("${A:-x} ${B:?need B} $${C} ${D}") == [
        ("A", ":-", "x"),
        ("B", ":?", "need B"),
        ("D", "", ""),
    ]
    assert resolve("redis://${H:-redis}:6379 ${K:?k}") == "redis://redis:6379 <K>"


# ------------------------------------------------------------------------------------------ compose


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    # The validator does reject a broken file (so the check above means something).
    broken = {"services": {"api": {"image": "x", "restart": "sometimes", "ports": "8000"}}}
    assert list(validator.iter_errors(broken))


def test_cpu_override_matches_the_compose_spec(services: dict[str, dict[str, Any]]) -> None:
    override = load_yaml(CPU_OVERRIDE)
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(override))
    assert not errors, [e.message for e in errors]
    assert set(override["services"]) == {"worker-training"}
    assert "!reset" in CPU_OVERRIDE.read_text(encoding="utf-8")
    assert override["services"]["worker-training"]["image"] == services["api"]["image"]


def test_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert {
        "redis",
        "api",
        "worker-cpu",
        "worker-training",
        "worker-agent",
        "qdrant",
        "mlflow",
        "flower",
        "prometheus",
        "alertmanager",
        "exporter",
        "grafana",
    } <= set(services)


def test_depends_on_names_existing_services(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        for dep, spec in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            checked += 1
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert dep != name
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy; it has no check"
                )
    assert checked >= 10


def test_every_queue_is_consumed_by_a_worker(workers: dict[str, set[str]]) -> None:
    assert set(QUEUES) == EXPECTED_QUEUES
    consumed = set().union(*workers.values())
    assert consumed == EXPECTED_QUEUES
    assert workers["worker-cpu"] == {"ingest", "inference"}
    assert workers["worker-training"] == {"training"}
    assert workers["worker-agent"] == {"agent"}


def test_workers_are_scalable(services: dict[str, dict[str, Any]], workers: dict[str, set[str]]) -> None:
    assert set(workers) == {"worker-cpu", "worker-training", "worker-agent"}
    for name in workers:
        service = services[name]
        assert "container_name" not in service, f"{name}: a fixed name breaks --scale"
        assert "ports" not in service, f"{name}: a host port breaks --scale"
        assert "hostname" not in service, f"{name}: a fixed hostname gives every replica one Celery node name"
        args = argv(service["command"])
        assert args[:4] == ["celery", "-A", "workers", "worker"]
        # %h: Celery expands it to the container hostname, unique per replica.
        assert (flag_value(args, "-n", "--hostname") or "").endswith("@%h")
        assert service["restart"] == "unless-stopped"
        assert "healthcheck" in service


def test_training_worker_reserves_a_gpu(services: dict[str, dict[str, Any]]) -> None:
    service = services["worker-training"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d["capabilities"]]
    assert len(gpus) == 1 and int(gpus[0]["count"]) >= 1
    assert "replicas" not in service["deploy"], "a fixed replica count would fight --scale"
    assert flag_value(argv(service["command"]), "-c", "--concurrency") == "1"
    # Built with CUDA torch; the CPU services keep the small CPU-only image.
    assert "pypi.org" in resolve(service["build"]["args"]["TORCH_INDEX_URL"])
    assert "whl/cpu" in resolve(services["api"]["build"]["args"]["TORCH_INDEX_URL"])
    assert service["image"] != services["api"]["image"]
    assert resolve(service["shm_size"]) == "1gb"


def test_agent_worker_uses_the_qdrant_service(services: dict[str, dict[str, Any]]) -> None:
    agent = services["worker-agent"]
    assert resolve(environment(agent)["QDRANT_URL"]) == "http://qdrant:6333"
    assert agent["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert "6333" in " ".join(services["qdrant"]["healthcheck"]["test"])


def test_api_and_flower_commands(services: dict[str, dict[str, Any]]) -> None:
    api = argv(services["api"]["command"])
    assert api[0] == "gunicorn" and api[-1] == "webapp:create_app()"
    assert flag_value(api, "-b", "--bind") == "0.0.0.0:8000"
    # The config `stockq up` uses too: dead workers' metric files are marked, the directory emptied.
    assert flag_value(api, "-c", "--config") == "python:webapp.gunicorn_conf"
    assert resolve(services["api"]["ports"][0]) == "8000:8000"
    assert "/health" in services["api"]["healthcheck"]["test"][-1]
    # Several gunicorn workers only report complete counters through the multiprocess directory.
    api_env = environment(services["api"])
    assert int(resolve(flag_value(api, "--workers") or "1")) == 1 or api_env.get("PROMETHEUS_MULTIPROC_DIR")
    assert api_env["PROMETHEUS_MULTIPROC_DIR"] in services["api"]["tmpfs"]
    assert resolve(api_env["STOCKQ_API_KEYS"]) == "<STOCKQ_API_KEYS>"

    flower = services["flower"]
    assert argv(flower["command"]) == ["celery", "-A", "workers", "flower", "--port=5555"]
    flower_env = environment(flower)
    assert resolve(flower_env["FLOWER_BASIC_AUTH"]) == "<FLOWER_BASIC_AUTH>"
    assert "FLOWER_UNAUTHENTICATED_API" not in flower_env
    buckets = [float(b) for b in flower_env["FLOWER_TASK_RUNTIME_METRIC_BUCKETS"].split(",")]
    assert buckets == sorted(buckets) and buckets[-1] >= Settings().train_time_limit_s
    assert resolve(flower["ports"][0]).startswith("127.0.0.1:")


def test_api_threads_outnumber_its_waiting_slots(
    services: dict[str, dict[str, Any]], manifests: list[dict[str, Any]]
) -> None:
    """STOCKQ_MAX_WAITING_PER_PROCESS requests per process may each hold a thread waiting on a job: a
    process needs more threads than that, or /health and submissions find none (webapp/gunicorn_conf.py
    refuses to start so; this checks the shipped defaults)."""
    api = services["api"]
    threads = int(resolve(flag_value(argv(api["command"]), "--threads") or "1"))
    waiting = int(resolve(environment(api)["STOCKQ_MAX_WAITING_PER_PROCESS"]))
    assert threads > waiting, (threads, waiting)
    (deployment,) = [
        d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == "stockq-api"
    ]
    (container,) = _containers(deployment)
    k8s_env = container_env(deployment, container, config_maps(manifests))
    k8s_waiting = int(k8s_env.get("STOCKQ_MAX_WAITING_PER_PROCESS", Settings().max_waiting_per_process))
    assert int(flag_value(container["command"], "--threads") or "1") > k8s_waiting


def test_too_few_threads_refuse_to_start(tmp_path: Path) -> None:
    """The start-up check itself: a real gunicorn with as many waiting slots as threads never serves."""
    from stockq.cli.stack import gunicorn_argv
    from tests.procs import free_port

    args = gunicorn_argv(free_port())
    threads = int(args[args.index("--threads") + 1])
    env = {**os.environ, "STOCKQ_MAX_WAITING_PER_PROCESS": str(threads), "STOCKQ_VAR_DIR": str(tmp_path)}
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert f"STOCKQ_MAX_WAITING_PER_PROCESS={threads}" in run.stderr and "--threads" in run.stderr


def _depends(services: dict[str, dict[str, Any]], name: str) -> set[str]:
    """Every service `name` waits for, directly or through others."""
    deps = services[name].get("depends_on") or {}
    direct = set(deps)
    return direct.union(*(_depends(services, d) for d in direct))


def test_placeholder_secrets_stop_compose_first(services: dict[str, dict[str, Any]]) -> None:
    """The one-shot check sees every secret compose requires, and every service that reads one waits for
    it to succeed."""
    check = services["secrets-check"]
    assert argv(check["command"]) == ["python", "-m", "stockq.placeholders"]
    required = {"STOCKQ_API_KEYS", "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD", "REDIS_PASSWORD"}
    assert {k for k, v in environment(check).items() if resolve(str(v)) == f"<{k}>"} == required
    uses = {name: json.dumps(svc) for name, svc in services.items() if name not in ONE_SHOT}
    readers = {name for name, text in uses.items() if any(f"${{{var}" in text for var in required)}
    assert {"redis", "redis-cache", "api", "flower", "grafana", "redis-exporter"} <= readers
    for name in readers:
        assert "secrets-check" in _depends(services, name), name
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if "secrets-check" in deps:
            assert deps["secrets-check"]["condition"] == "service_completed_successfully", name


def test_stockq_env_reaches_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # pydantic-settings ignores unknown names, so a misspelt variable would silently fall back to defaults.
    env = {k: resolve(v) for k, v in environment(services["worker-cpu"]).items() if v is not None}
    for key in list(os.environ):
        if key.startswith("STOCKQ_") or key in {"MLFLOW_TRACKING_URI", "QDRANT_URL"}:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    # The broker's Redis and the evicting cache Redis, both behind the one password.
    assert settings.redis_url == "redis://:<REDIS_PASSWORD>@redis:6379/0"
    assert settings.cache_url == "redis://:<REDIS_PASSWORD>@redis-cache:6379/0"
    assert settings.feast_redis_url == "redis://:<REDIS_PASSWORD>@redis-cache:6379/1"
    assert settings.feast_connection_string == "redis-cache:6379,db=1,password=<REDIS_PASSWORD>"
    assert str(settings.var_dir) == "/var/lib/stockq"
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.qdrant_url == "http://qdrant:6333"
    assert settings.data_source == "auto"
    assert settings.torch_threads == 1
    # Passed through only when set: an empty OPENAI_BASE_URL would otherwise override the client default.
    assert environment(services["worker-agent"])["OPENAI_BASE_URL"] is None


def test_env_urls_point_at_services(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    env = {k: resolve(v) for k, v in compose["x-stockq-env"].items() if v is not None}
    for key in ("STOCKQ_REDIS_URL", "STOCKQ_CACHE_REDIS_URL", "MLFLOW_TRACKING_URI", "QDRANT_URL"):
        url = urlparse(env[key])
        assert url.hostname in services and url.port, f"{key}={env[key]} names no service"
    assert "--port=5000" in argv(services["mlflow"]["command"])
    allowed = flag_value([resolve(a) for a in argv(services["mlflow"]["command"])], "--allowed-hosts")
    assert allowed and "mlflow:5000" in allowed.split(",")


def test_variables_have_defaults_or_are_required() -> None:
    lines = COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    found = variables("\n".join(line for line in lines if not line.lstrip().startswith("#")))
    assert len(found) > 15
    bare = [name for name, op, _ in found if not op]
    assert not bare, f"${{VAR}} without a default or :? message: {bare}"
    required = {name for name, op, _ in found if op in {"?", ":?"}}
    assert required == {"STOCKQ_API_KEYS", "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD", "REDIS_PASSWORD"}
    example = (COMPOSE_DIR / ".env.example").read_text(encoding="utf-8")
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert required <= defined, f"compose/.env.example lacks {sorted(required - defined)}"


def _redis_args(service: dict[str, Any]) -> list[str]:
    """redis-server's arguments from `sh -c 'exec redis-server ...'`, variables at their defaults."""
    shell, flag, script = argv(service["command"])
    assert (shell, flag) == ("sh", "-c")
    args = shlex.split(resolve(script.replace("$${", "${")))
    assert args[:2] == ["exec", "redis-server"]
    return args[2:]


def test_redis_persists_queued_jobs(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    redis_service = services["redis"]
    args = _redis_args(redis_service)
    assert flag_value(args, "--appendonly") == "yes"
    assert "redis-data:/data" in redis_service["volumes"]
    assert redis_service["restart"] == "unless-stopped"
    assert "redis-cli" in redis_service["healthcheck"]["test"]
    # Full: refuse writes rather than evict queued jobs, below the container limit (AOF rewrite headroom).
    assert flag_value(args, "--maxmemory-policy") == "noeviction"
    assert _bytes(flag_value(args, "--maxmemory")) <= 0.8 * _bytes(redis_service["mem_limit"])
    assert flag_value(args, "--requirepass") == "$REDIS_PASSWORD"
    assert resolve(environment(redis_service)["REDISCLI_AUTH"]) == "<REDIS_PASSWORD>"


def test_cache_redis_evicts_and_keeps_nothing(services: dict[str, dict[str, Any]]) -> None:
    cache = services["redis-cache"]
    args = _redis_args(cache)
    assert flag_value(args, "--maxmemory-policy") == "allkeys-lru"
    assert flag_value(args, "--appendonly") == "no" and flag_value(args, "--save") == ""
    assert _bytes(flag_value(args, "--maxmemory")) <= 0.8 * _bytes(cache["mem_limit"])
    assert "volumes" not in cache
    assert resolve(environment(services["redis-exporter"])["REDIS_PASSWORD"]) == "<REDIS_PASSWORD>"


def _bytes(size: str | None) -> float:
    match = re.fullmatch(r"(\d+)\s*([kmg])b?", (size or "").lower())
    assert match, size
    return int(match.group(1)) * 1024 ** "kmg".index(match.group(2)) * 1024


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
            else:
                assert (COMPOSE_DIR / source).exists(), f"bind mount {source} does not exist"
    assert used == declared
    # The API and every worker share one var dir (Feast offline store and registry, data cache).
    for name in ("api", "worker-cpu", "worker-training", "worker-agent"):
        assert "stockq-var:/var/lib/stockq" in services[name]["volumes"]


# Services that run once before the others (their dependants wait for `service_completed_successfully`).
ONE_SHOT = {"secrets-check"}


def test_long_running_services_restart_and_report_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name  # restarted, it would run forever
            continue
        assert service.get("restart") == "unless-stopped", name
        if name != "redis-exporter":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_image_build_uses_the_repo(services: dict[str, dict[str, Any]]) -> None:
    build = services["api"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == ROOT
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    assert (dockerfile.parent / (dockerfile.name + ".dockerignore")).is_file()
    ignored = (dockerfile.parent / (dockerfile.name + ".dockerignore")).read_text(encoding="utf-8").split()
    assert {".venv", "var", ".git"} <= set(ignored)

    lines = [line.strip() for line in dockerfile.read_text(encoding="utf-8").splitlines()]
    runs = [i for i, line in enumerate(lines) if line.startswith("RUN ")]
    torch_line = next(i for i in runs if "torch==${TORCH_VERSION}" in lines[i])
    deps_line = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    project_line = next(i for i in runs if "pip install --no-deps ." in lines[i])
    assert torch_line < deps_line < project_line
    assert "ARG TORCH_VERSION=2.13.0" in lines
    assert build["args"]["TORCH_VERSION"] == "2.13.0"
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert any(line.startswith("USER ") and "root" not in line for line in lines)


# ---------------------------------------------------------------------------------------- prometheus


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_DIR / "prometheus.yml")


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    rules = load_yaml(PROMETHEUS_DIR / "alerts.yml")
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_prometheus_scrapes_api_and_flower(
    prometheus: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = {name: [t for sc in job["static_configs"] for t in sc["targets"]] for name, job in jobs.items()}
    assert targets["stockq-api"] == ["api:8000"]
    assert targets["flower"] == ["flower:5555"]
    assert targets["redis"] == ["redis-exporter:9121"]
    assert targets["stockq-exporter"] == [f"exporter:{Settings().exporter_port}"]
    for name in ("stockq-api", "stockq-exporter", "flower"):
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    for name, hosts in targets.items():
        for target in hosts:
            host = target.split(":")[0]
            assert host == "localhost" or host in services, f"job {name} scrapes unknown host {host}"


def test_prometheus_loads_the_alert_file(
    prometheus: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert mounts["./prometheus"] == "/etc/prometheus"
    # Relative to the config file: the same path resolves in the container and in this checkout.
    for rule_file in prometheus["rule_files"]:
        assert not Path(rule_file).is_absolute(), rule_file
        assert (PROMETHEUS_DIR / rule_file).is_file(), rule_file
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def test_alert_rules_use_known_metrics(alert_rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in alert_rules]
    assert len(names) == len(set(names))
    for rule in alert_rules:
        known(rule["expr"])
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_key_alerts_exist_with_their_windows(alert_rules: list[dict[str, Any]]) -> None:
    by_name = {rule["alert"]: rule for rule in alert_rules}
    expected = {
        "StockqApiDown": ({"up"}, "1m"),
        "StockqExporterDown": ({"up"}, "2m"),
        "StockqHigh5xxRatio": ({"stockq_http_request_total"}, "5m"),
        "StockqHighLatencyP99": ({"stockq_http_request_duration_seconds_bucket"}, "10m"),
        "StockqWorkerDown": ({"stockq_worker_up"}, "2m"),
        "StockqQueueNoWorkers": ({"stockq_workers", "stockq_queue_length"}, "2m"),
        "StockqNoWorkersOnline": ({"stockq_worker_up", "up"}, "2m"),
        "StockqQueueBacklog": ({"stockq_queue_oldest_age_seconds"}, "5m"),
        "StockqJobFailureRatio": ({"stockq_jobs_finished_total"}, "10m"),
        "StockqDeadLetter": ({"stockq_deadletter_size"}, "1m"),
        "StockqJobStuck": ({"stockq_jobs_overdue"}, "5m"),
        "StockqModelStale": ({"stockq_model_age_seconds"}, "1h"),
        "RedisDown": ({"redis_up", "up", "stockq_redis_up"}, "1m"),
        "RedisMemoryHigh": ({"stockq_redis_memory_used_bytes", "stockq_redis_memory_limit_bytes"}, "10m"),
        "FlowerDown": ({"up"}, "5m"),
    }
    assert set(by_name) == set(expected)
    for name, (metrics, window) in expected.items():
        assert metric_names(by_name[name]["expr"]) == metrics, name
        assert by_name[name]["for"] == window, name
    assert re.search(r"stockq_worker_up\s*==\s*0", by_name["StockqWorkerDown"]["expr"])
    assert 'status=~"5.."' in by_name["StockqHigh5xxRatio"]["expr"]
    assert 'status="failed"' in by_name["StockqJobFailureRatio"]["expr"]
    assert 'job="stockq-api"' in by_name["StockqApiDown"]["expr"]
    # CeleryNoWorkersOnline could never fire (Flower keeps a crashed worker online): replaced.
    assert not any("flower_worker_online" in rule["expr"] for rule in alert_rules)


def _all_exprs() -> Iterator[str]:
    for group in load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]
    for panel in _dashboard_panels():
        for target in panel["targets"]:
            yield target["expr"]


# ------------------------------------------------------------------------------------------- grafana


def _dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        panels.extend(json.loads(path.read_text(encoding="utf-8"))["panels"])
    return panels


def test_grafana_datasource_and_dashboard_provider(services: dict[str, dict[str, Any]]) -> None:
    provisioning = GRAFANA_DIR / "provisioning"
    sources = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert [(s["uid"], s["type"], s["url"]) for s in sources] == [
        ("prometheus", "prometheus", "http://prometheus:9090")
    ]
    assert "9090" in " ".join(services["prometheus"]["healthcheck"]["test"])
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = load_yaml(provisioning / "dashboards" / "stockq.yaml")["providers"]
    assert [p["options"]["path"] for p in providers] == [mounts["./grafana/dashboards"]]


def test_dashboard_panels_query_prometheus_for_known_metrics() -> None:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "stockq-overview.json").read_text(encoding="utf-8"))
    assert dashboard["title"] == "stockq overview" and dashboard["uid"] == "stockq-overview"
    panels = dashboard["panels"]
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus", panel["title"]
            used |= known(target["expr"])
    # Request rate, latency, 5xx, queues, workers, jobs, caches, models and Flower runtimes all shown.
    shown = EXPORTER_METRICS - {"stockq_jobs_overdue", "stockq_redis_up"}
    assert (API_METRICS - {"stockq_http_request_exceptions_total"}) | shown <= used
    assert {"flower_task_runtime_seconds", "flower_worker_number_of_currently_executing_tasks"} <= used
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("request rate", "p50", "p99", "5xx", "queue length", "workers per queue", "cache hit ratio"):
        assert word in titles, word


def test_grafana_alert_rules_are_wellformed(alert_rules: list[dict[str, Any]]) -> None:
    # Their content is generated from alerts.yml (tests/test_alerts.py checks that it is up to date).
    doc = load_yaml(GRAFANA_DIR / "provisioning" / "alerting" / "rules.yaml")
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len({r["uid"] for r in rules}) == len(rules) == len(alert_rules)
    for rule in rules:
        refs = {d["refId"]: d for d in rule["data"]}
        assert rule["condition"] in refs
        for data in rule["data"]:
            assert data["datasourceUid"] in {"prometheus", "__expr__"}
            if data["datasourceUid"] == "prometheus":
                known(data["model"]["expr"])
            else:
                inputs = set(re.findall(r"\$([A-Z])", data["model"]["expression"])) or {
                    data["model"]["expression"]
                }
                assert inputs <= set(refs) - {data["refId"]}
        assert rule["labels"]["severity"] in {"warning", "critical"}
        # Grafana expands $NAME in provisioned labels as environment variables: templates use .Labels.
        assert "$" not in json.dumps(rule["labels"]) + json.dumps(rule["annotations"])
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    by_title = {r["title"]: r for r in rules}
    for rule in alert_rules:
        assert by_title[rule["alert"]]["for"] == rule["for"]


def test_grafana_contact_point_from_env(services: dict[str, dict[str, Any]]) -> None:
    alerting = GRAFANA_DIR / "provisioning" / "alerting"
    points = load_yaml(alerting / "contact-points.yaml")["contactPoints"]
    receivers = {r["uid"]: r for p in points for r in p["receivers"]}
    webhook = receivers["stockq-webhook"]
    assert webhook["type"] == "webhook"
    match = re.fullmatch(r"\$\{?([A-Z_]+)\}?", webhook["settings"]["url"])
    assert match, "the webhook URL must come from the environment"
    assert match.group(1) in environment(services["grafana"])
    names = {p["name"] for p in points}
    policies = load_yaml(alerting / "notification-policies.yaml")["policies"]

    def receivers_of(policy: dict[str, Any]) -> Iterator[str]:
        yield policy["receiver"]
        for route in policy.get("routes", []):
            yield from receivers_of(route)

    assert {r for p in policies for r in receivers_of(p)} <= names


# ---------------------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            docs.extend(doc for doc in yaml.safe_load_all(fh) if doc is not None)
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload (KEDA's ScaledJob included), else None."""
    if doc["kind"] == "ScaledJob":
        return doc["spec"]["jobTargetRef"]["template"]["spec"]
    if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    return None


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [] if spec is None else spec["containers"]


def container_env(doc: dict[str, Any], container: dict[str, Any], configs: dict[str, dict[str, str]]) -> dict:
    """What a container's process sees: its ConfigMaps, then its own values with `$(VAR)` expanded
    (Secret values stand as <KEY>; an optional reference to a missing key sets nothing)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configs[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        ref = item.get("valueFrom", {})
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Z_]+)\)", lambda m: env[m.group(1)], item["value"])
        elif "secretKeyRef" in ref:
            env[item["name"]] = f"<{ref['secretKeyRef']['key']}>"
        elif "configMapKeyRef" in ref:
            found = configs[ref["configMapKeyRef"]["name"]].get(ref["configMapKeyRef"]["key"])
            assert found is not None or ref["configMapKeyRef"].get("optional"), item
            if found is not None:
                env[item["name"]] = found
    return env


def config_maps(manifests: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in manifests if d["kind"] == "ConfigMap"}


def test_k8s_manifests_parse_and_are_wellformed(manifests: list[dict[str, Any]]) -> None:
    assert len(manifests) >= 10
    for doc in manifests:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "stockq", doc["metadata"]["name"]
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]


def test_k8s_workers_consume_every_queue(manifests: list[dict[str, Any]]) -> None:
    consumed: set[str] = set()
    for doc in manifests:
        for container in _containers(doc):
            consumed |= celery_queues(container.get("command")) or set()
    assert consumed == EXPECTED_QUEUES


def test_k8s_gpu_training_is_one_job_per_message(manifests: list[dict[str, Any]]) -> None:
    gpu = [
        doc
        for doc in manifests
        if any(
            int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
            for c in _containers(doc)
        )
    ]
    assert [(d["kind"], d["metadata"]["name"]) for d in gpu] == [("ScaledJob", "worker-training-gpu")]
    (job,) = gpu
    (container,) = _containers(job)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert celery_queues(container["command"]) == {"training"}
    # The one-shot app: the pod takes one message, runs it and exits (no scale-in under a training).
    assert argv(container["command"])[:3] == ["celery", "-A", "workers.oneshot"]
    assert flag_value(container["command"], "-c", "--concurrency") == "1"
    assert container["image"].startswith("stockq-gpu:")
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["spec"]["scalingStrategy"]["strategy"] == "accurate"
    (trigger,) = job["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == "training" and trigger["metadata"]["listLength"] == "1"
    # No autoscaler of the old kind is left to remove pods that are still training.
    assert not [d for d in manifests if d["kind"] == "HorizontalPodAutoscaler"]
    assert not [d for d in manifests if d["kind"] == "Deployment" and "training" in d["metadata"]["name"]]


def test_k8s_config_reaches_settings(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("STOCKQ_") or key in {"MLFLOW_TRACKING_URI", "QDRANT_URL"}:
            monkeypatch.delenv(key)
    (worker,) = [d for d in manifests if d["metadata"]["name"] == "worker-cpu" and d["kind"] == "Deployment"]
    for key, value in container_env(worker, _containers(worker)[0], config_maps(manifests)).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.redis_url == "redis://:<REDIS_PASSWORD>@redis:6379/0"
    assert settings.feast_connection_string == "redis-cache:6379,db=1,password=<REDIS_PASSWORD>"
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.qdrant_url == "http://qdrant:6333"
    services = {d["metadata"]["name"] for d in manifests if d["kind"] == "Service"}
    expected = {"redis", "redis-cache", "mlflow", "qdrant", "api", "flower", "exporter", "alertmanager"}
    assert expected <= services
    # Every workload mounting the shared var dir uses the one ReadWriteMany claim.
    (claim,) = [
        d for d in manifests if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "stockq-var"
    ]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_one_exporter_in_compose_and_k8s(
    manifests: list[dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    # Two exporters would report every queue, worker and job twice.
    exporter = services["exporter"]
    assert argv(exporter["command"])[:2] == ["stockq", "exporter"]
    assert "replicas" not in exporter.get("deploy", {})
    assert environment(exporter)["STOCKQ_EXPORTER_PORT"] == str(Settings().exporter_port)
    (deployment,) = [d for d in manifests if d["metadata"]["name"] == "stockq-exporter"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = _containers(deployment)
    assert container["command"] == argv(exporter["command"])
