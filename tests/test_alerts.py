"""The alert rules with the real tools: promtool checks and unit-tests them, amtool checks Alertmanager's
config, the Grafana copy is the generated one, and the Kubernetes scrape config yields the `job` labels
the rules select."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.promstack import tool

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose"
PROMETHEUS = COMPOSE / "prometheus"
ALERTMANAGER = COMPOSE / "alertmanager"
K8S = COMPOSE / "k8s"

_spec = importlib.util.spec_from_file_location("alertgen", COMPOSE / "alertgen.py")
assert _spec and _spec.loader
alertgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(alertgen)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_unit_tests_pass() -> None:
    promtool = tool("promtool")
    checked = run(promtool, "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", *map(str, sorted((PROMETHEUS / "tests").glob("*.yml"))))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The same tests against rules whose threshold moved must fail (they assert, not just parse)."""
    promtool = tool("promtool")
    doc = alertgen.load()
    for rule in alertgen.rules(doc):
        if rule["alert"] == "StockqDeadLetter":
            rule["expr"] = "stockq_deadletter_size > 5"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    tests = tmp_path / "tests"
    tests.mkdir()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        (tests / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    tested = run(promtool, "test", "rules", *map(str, sorted(tests.glob("*.yml"))))
    assert tested.returncode != 0
    assert "StockqDeadLetter" in tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_firing_quiet_and_resolved() -> None:
    """For each alert some test expects it firing, quiet before, and quiet again after (resolved)."""
    seen: dict[str, list[tuple[float, bool]]] = {}
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in test.get("alert_rule_test", []):
                seen.setdefault(case["alertname"], []).append(
                    (_minutes(case["eval_time"]), bool(case.get("exp_alerts")))
                )
    for rule in alertgen.rules(alertgen.load()):
        cases = sorted(seen.get(rule["alert"], []))
        fired = [t for t, firing in cases if firing]
        assert fired, f"{rule['alert']}: no test expects it to fire"
        assert any(not firing and t < fired[0] for t, firing in cases), f"{rule['alert']}: never quiet"
        assert any(not firing and t > fired[-1] for t, firing in cases), f"{rule['alert']}: never resolves"


def _minutes(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1 / 60, "m": 1, "h": 60}[unit]


def test_grafana_rules_are_generated_from_the_prometheus_rules() -> None:
    current = (COMPOSE / "grafana" / "provisioning" / "alerting" / "rules.yaml").read_text(encoding="utf-8")
    assert current == alertgen.grafana(alertgen.load()), "Grafana's alert rules drifted: run `make alerts`"
    # The check mode the Makefile offers agrees, and catches a drifted copy.
    assert alertgen.main(["grafana", "--check"]) == 0
    doc = alertgen.load()
    doc["groups"][0]["rules"][0]["for"] = "9m"
    assert alertgen.grafana(doc) != current


def test_grafana_rule_is_the_prometheus_rule() -> None:
    doc = yaml.safe_load(alertgen.grafana(alertgen.load()))
    grafana = {r["title"]: r for g in doc["groups"] for r in g["rules"]}
    for rule in alertgen.rules(alertgen.load()):
        mirrored = grafana[rule["alert"]]
        (query,) = [d for d in mirrored["data"] if d["datasourceUid"] == "prometheus"]
        assert query["model"]["expr"] == " ".join(rule["expr"].split())
        assert mirrored["for"] == rule["for"]
        assert mirrored["labels"]["severity"] == rule["labels"]["severity"]
        assert mirrored["annotations"]["summary"] == alertgen.grafana_template(rule["annotations"]["summary"])
    assert alertgen.grafana_template("{{ $labels.queue }}: {{ $value | humanize }}") == (
        "{{ .Labels.queue }}: {{ .Values.B.Value | humanize }}"
    )


def test_fast_rules_keep_expressions_and_shorten_every_for(tmp_path: Path) -> None:
    out = tmp_path / "alerts.yml"
    assert alertgen.main(["fast", str(out), "--for", "2s"]) == 0
    fast, source = alertgen.rules(yaml.safe_load(out.read_text())), alertgen.rules(alertgen.load())
    assert [r["expr"] for r in fast] == [r["expr"] for r in source]
    assert {r["for"] for r in fast} == {"2s"}
    checked = run(tool("promtool"), "check", "rules", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_prometheus_config_resolves_its_rules() -> None:
    checked = run(tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "15 rules found" in checked.stdout + checked.stderr


# ---------------------------------------------------------------------------------------- kubernetes


def _services() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return [d for d in docs if d["kind"] == "Service"]


def _meta_labels(service: dict[str, Any]) -> dict[str, str]:
    """The labels Kubernetes endpoints discovery gives one pod behind `service`."""
    port = service["spec"]["ports"][0]["port"]
    labels = {"__address__": f"10.0.0.7:{port}", "__meta_kubernetes_pod_name": "pod-0", "job": "stockq"}
    for key, value in (service["metadata"].get("annotations") or {}).items():
        labels["__meta_kubernetes_service_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = str(value)
    return labels


def _relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus's relabelling for the `keep` and `replace` actions the k8s config uses."""
    labels = dict(labels)
    for cfg in configs:
        value = cfg.get("separator", ";").join(labels.get(s, "") for s in cfg["source_labels"])
        match = re.fullmatch(cfg.get("regex", "(.*)"), value)
        action = cfg.get("action", "replace")
        if action == "keep":
            if not match:
                return None
        elif action == "replace":
            if match:
                replacement = cfg.get("replacement", "$1")
                labels[cfg["target_label"]] = match.expand(re.sub(r"\$(\d+)", r"\\\1", replacement))
        else:
            raise AssertionError(f"relabel action {action} not modelled")
    return labels


def test_k8s_scrape_config_gives_the_job_labels_the_rules_select(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "k8s.yml").read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    targets = [t for t in (_relabel(_meta_labels(s), job["relabel_configs"]) for s in _services()) if t]
    jobs = {t["job"]: t for t in targets}
    selected = {
        m for rule in alertgen.rules(alertgen.load()) for m in re.findall(r'job="([^"]+)"', rule["expr"])
    }
    assert selected == {"stockq-api", "stockq-exporter", "flower", "redis"}
    assert selected <= set(jobs), f"no k8s target gets job {sorted(selected - set(jobs))}"
    assert jobs["stockq-api"]["__address__"] == "10.0.0.7:8000"
    assert jobs["stockq-exporter"]["__address__"] == "10.0.0.7:9808"
    assert jobs["flower"]["__metrics_path__"] == "/metrics"
    # The compose config scrapes under the same job names.
    compose = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    assert selected <= {j["job_name"] for j in compose["scrape_configs"]}
    # No Pod carries prometheus.io annotations: generic pod scraping would add a second, other job.
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc["kind"] in {"Deployment", "StatefulSet"}:
                annotations = doc["spec"]["template"]["metadata"].get("annotations") or {}
                assert not any(k.startswith("prometheus.io/") for k in annotations), path.name

    # promtool validates the rest of it (Debian's build lacks Kubernetes discovery: static targets
    # stand in for it), with the rules resolved next to it.
    job["static_configs"] = [{"targets": ["10.0.0.7:8000"]}]
    del job["kubernetes_sd_configs"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text(), encoding="utf-8")
    checked = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -------------------------------------------------------------------------------------- alertmanager


def render_alertmanager(webhook_url: str) -> str:
    """What compose/alertmanager/run.sh writes before starting Alertmanager."""
    text = (ALERTMANAGER / "alertmanager.yml").read_text(encoding="utf-8")
    assert text.count("${ALERT_WEBHOOK_URL}") == 1
    return text.replace("${ALERT_WEBHOOK_URL}", webhook_url)


def test_alertmanager_config_routes_by_severity_to_the_webhook(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager("http://127.0.0.1:9/hook"), encoding="utf-8")
    checked = run(tool("amtool"), "check-config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(path.read_text())
    matchers = [route["matchers"] for route in config["route"]["routes"]]
    severities = {m for ms in matchers for m in ms}
    assert severities == {'severity="critical"', 'severity="warning"'}
    (receiver,) = config["receivers"]
    assert receiver["webhook_configs"] == [{"url": "http://127.0.0.1:9/hook", "send_resolved": True}]
    # Each alert severity reaches a route (amtool's routing test against the real tree).
    for severity in ("critical", "warning"):
        routed = run(
            tool("amtool"), "config", "routes", "test", f"--config.file={path}", f"severity={severity}"
        )
        assert routed.stdout.strip() == "stockq-webhook", routed.stdout + routed.stderr


def test_k8s_alertmanager_carries_the_compose_config_verbatim() -> None:
    docs = list(yaml.safe_load_all((K8S / "alertmanager.yaml").read_text(encoding="utf-8")))
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    for name in ("alertmanager.yml", "run.sh"):
        assert config["data"][name] == (ALERTMANAGER / name).read_text(encoding="utf-8"), name
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "/etc/alertmanager/run.sh"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ALERT_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"]["name"] == "stockq-secrets"
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text(encoding="utf-8"))
    assert compose["services"]["alertmanager"]["entrypoint"] == container["command"]
