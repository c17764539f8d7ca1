"""docker-compose.yml (PostgreSQL + the service) and the Dockerfile it builds, checked for structure here:
Docker is not available where the tests run, so the compose file is never started by them."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from typer.main import get_command

from cli.main import app, workers_problem

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def carepath_commands() -> set[str]:
    return set(get_command(app).commands)


def test_compose_runs_the_service_on_postgresql_after_the_database_is_healthy():
    c = compose()
    services = c["services"]
    db, svc = services["db"], services["carepath"]
    assert db["image"].startswith("postgres:")
    assert db["environment"]["POSTGRES_DB"] == "carepath" and db["environment"]["POSTGRES_USER"] == "carepath"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")[0]
    assert volume in c["volumes"]  # the registry survives `docker compose down`
    assert svc["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert svc["depends_on"]["db"]["condition"] == "service_healthy"
    url = svc["environment"]["DATABASE_URL"]
    assert re.match(r"^postgresql\+psycopg://carepath:\$\{POSTGRES_PASSWORD:\?[^}]+\}@db:5432/carepath$", url)
    cmd = svc["command"]
    assert cmd[:2] == ["carepath", "serve"] and "0.0.0.0" in cmd and "8000:8000" in svc["ports"]
    workers = int(cmd[cmd.index("--workers") + 1])
    assert workers_problem(url.replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "pw"), workers) is None
    assert cmd[cmd.index("--log-format") + 1] in ("json", "text")
    assert svc["environment"]["PROMETHEUS_MULTIPROC_DIR"] in svc["tmpfs"]  # several workers' metrics, empty at start
    # the demo seeding is a carepath command, run against the same database
    demo = services["demo"]
    assert demo["command"][0] == "carepath" and demo["command"][1] in carepath_commands()
    assert demo["environment"]["DATABASE_URL"] == url and demo["depends_on"]["db"]["condition"] == "service_healthy"
    assert cmd[1] in carepath_commands()


def test_the_image_holds_every_package_the_carepath_command_needs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.M))
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["carepath"]
    assert script.split(".")[0] in copied  # cli: without it the image's `carepath` cannot start
    assert {"engine", "api"} <= copied
