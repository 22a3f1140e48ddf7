"""The Docker stack is checked even where Docker is absent: compose, Prometheus, Grafana."""

import json
import re
from pathlib import Path

import yaml

from shunter.agents.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]


def test_compose_describes_the_whole_stack():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "scheduler", "workers-gpu-large", "workers-gpu-small", "workers-cpu", "audit-sink",
            "prometheus", "grafana"} <= set(services)
    assert services["scheduler"]["command"] == ["scheduler"]
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            host = vol.split(":")[0]
            if host in compose.get("volumes", {}):
                continue
            assert (ROOT / host).exists(), f"{name} mounts {host}, which is not in the repository"


def test_prometheus_scrapes_the_scheduler_web_port():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    port = compose["services"]["scheduler"]["environment"]["SHUNTER_WEB_PORT"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"scheduler:{port}" in targets


def test_dashboard_queries_only_metrics_that_exist():
    known = set()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            known.add(sample.name)
    known |= {m.name for m in REGISTRY.collect()}
    known |= {m.name + "_total" for m in REGISTRY.collect()} | {m.name + "_bucket" for m in REGISTRY.collect()}
    dash = json.loads((ROOT / "deploy/grafana/dashboards/shunter.json").read_text())
    assert dash["panels"]
    for panel in dash["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"shunter_[a-z_]+", target["expr"]):
                assert name in known, f"panel {panel['title']!r} queries unknown metric {name}"
