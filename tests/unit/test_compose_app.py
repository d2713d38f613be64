"""The application half of docker-compose.kafka.yml (profile "app") and the Dockerfile:
every command a container runs exists in the CLI, every process ``mosaic run all``
supervises has a container, and the image holds every package the project installs."""

from __future__ import annotations

import argparse
import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from app.cli import build_parser
from app.ops.supervisor import service_specs
from mosaic.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app_services() -> dict[str, Any]:
    yaml: Any = importlib.import_module("yaml")
    services = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())["services"]
    return {n: s for n, s in services.items() if "app" in s.get("profiles", [])}


def _parse(command: list[str]) -> argparse.Namespace:
    try:
        args = build_parser().parse_args(command)
    except SystemExit as exc:  # argparse exits on an unknown command or flag
        raise AssertionError(f"'mosaic {' '.join(command)}' is not a CLI command") from exc
    assert callable(getattr(args, "func", None)), command
    return args


def test_every_compose_command_exists_in_the_cli(app_services: dict[str, Any]) -> None:
    assert app_services
    for name, service in app_services.items():
        assert service["image"] == "mosaic-match", name
        args = _parse(service["command"])
        if service["command"][0] == "with-ops":  # the wrapped command too
            inner = args.command[1:] if args.command[:1] == ["--"] else args.command
            _parse(inner)


def test_every_supervised_process_has_a_container(app_services: dict[str, Any]) -> None:
    specs = service_specs(Settings.model_construct())
    assert set(specs) <= set(app_services)
    for name, spec in specs.items():
        assert app_services[name]["command"][0] == spec.args[0], name


def test_a_bad_command_would_be_caught() -> None:
    with pytest.raises(AssertionError, match="not a CLI command"):
        _parse(["no-such-command"])


def test_dockerfile_copies_every_package_and_enters_mosaic() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert {p.rstrip("*") for p in include} <= copied
    assert project["project"]["scripts"]["mosaic"].startswith("app.cli:")
    assert 'ENTRYPOINT ["mosaic"]' in dockerfile
    assert "COPY requirements.lock" in dockerfile
