"""``mosaic run``'s process table: replicas of the embedding and post-match services get
their own names and /metrics ports, the other services stay single."""

from __future__ import annotations

import pytest

from app.cli import build_parser
from app.ops.supervisor import service_of, service_specs
from mosaic.errors import ConfigError
from mosaic.ops.ports import OPS_PORTS
from mosaic.settings import Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings.model_construct()


def test_one_process_each_by_default() -> None:
    specs = service_specs(SETTINGS)
    assert list(specs) == ["ingress", "embedding", "matcher", "ticker", "postmatch",
                           "reconciler"]
    assert specs["postmatch"].port == OPS_PORTS["postmatch"]


def test_replicas_take_the_ports_after_the_table() -> None:
    ports = {name: port + 1000 for name, port in OPS_PORTS.items()}  # 10100...10105
    specs = service_specs(SETTINGS, ports, replicas={"embedding": 2, "postmatch": 3})
    assert list(specs) == ["ingress", "embedding", "embedding-2", "matcher", "ticker",
                           "postmatch", "postmatch-2", "postmatch-3", "reconciler"]
    assert [specs[n].port for n in ("embedding-2", "postmatch-2", "postmatch-3")] == [
        10106, 10107, 10108]
    assert specs["embedding-2"].args == specs["embedding"].args
    assert specs["embedding-2"].env == {"MOSAIC_METRICS_PORT": "10106"}
    assert specs["postmatch-3"].args == ("postmatch", "--port", "10108",
                                         "--reconcile-every", "0")
    ports_used = [s.port for s in specs.values()]
    assert len(set(ports_used)) == len(ports_used)


@pytest.mark.parametrize("replicas", [{"postmatch": 0}, {"matcher": 2}])
def test_bad_replica_counts_are_refused(replicas: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="replicas"):
        service_specs(SETTINGS, replicas=replicas)


@pytest.mark.parametrize(("name", "service"), [
    ("postmatch-2", "postmatch"), ("embedding", "embedding"), ("matcher", "matcher"),
    ("matcher-2", "matcher-2"), ("postmatch-x", "postmatch-x")])
def test_service_of_a_child_name(name: str, service: str) -> None:
    assert service_of(name) == service


def test_the_cli_passes_the_process_counts() -> None:
    args = build_parser().parse_args(["run", "all", "--postmatch-processes", "3",
                                      "--embedding-processes", "2"])
    assert (args.postmatch_processes, args.embedding_processes) == (3, 2)
    assert build_parser().parse_args(["run"]).postmatch_processes == 1
