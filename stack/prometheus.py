"""Prometheus 3.x built from the Go module proxy (``prometheus`` and ``promtool``), on loopback.

Built like Nakama: ``go mod download -json`` gives the module source, ``go build`` runs in
it (``GOWORK=off``: the module ships a go.work that would forbid ``-mod=mod``), and the
binaries are cached per version in the cache dir. The web UI's assets are not embedded
(that needs npm); the HTTP API, ``/-/ready`` and the rule engine are all there.

It scrapes every Mosaic process through file-based service discovery: ``up`` writes
``<data dir>/prometheus/targets/local.json`` with the default port of each process
(:mod:`mosaic.ops.ports`), and ``mosaic run`` adds a file for the ports it really used.
Alert rules come from ``<repo>/ops/prometheus/rules.yml``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mosaic.errors import StackError
from mosaic.ops.ports import scrape_targets, targets_dir, write_targets
from stack.base import Service, require_tool, run
from stack.nakama import http_call

MODULE = "github.com/prometheus/prometheus"
RULES_FILE = Path(__file__).resolve().parents[1] / "ops" / "prometheus" / "rules.yml"
GO_HINT = ("Prometheus is built from source with Go (its go.mod asks for 1.26.7): install "
           "Go from https://go.dev/dl and put 'go' on PATH, or copy prebuilt prometheus and "
           "promtool binaries to {folder}")
SCRAPE_INTERVAL = "5s"


class Prometheus(Service):
    name = "prometheus"

    @property
    def version(self) -> str:
        return self.settings.stack.prometheus_version

    @property
    def folder(self) -> Path:
        return self.cache_dir / f"prometheus-{self.version}"

    @property
    def binary(self) -> Path:
        return self.folder / "prometheus"

    @property
    def promtool(self) -> Path:
        return self.folder / "promtool"

    @property
    def targets_dir(self) -> Path:
        return targets_dir(self.settings)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.stack.prometheus_port}"

    def installed(self) -> bool:
        return all(p.is_file() and os.access(p, os.X_OK) for p in (self.binary, self.promtool))

    def install(self) -> None:
        if self.installed():
            return
        go = require_tool("go", GO_HINT.format(folder=self.folder))
        print(f"... building Prometheus {self.version} from the Go module proxy (first use "
              "only; about 10-15 minutes on 2 cores)", flush=True)
        build_binaries(go, self.version, self.folder)

    def prepare(self) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        write_targets(self.targets_dir / "local.json", scrape_targets(self.settings))
        (self.data_dir / "prometheus.yml").write_text(json.dumps(self.config(), indent=2) + "\n")

    def config(self) -> dict[str, Any]:
        """prometheus.yml (as JSON, a subset of YAML)."""
        own = f"127.0.0.1:{self.settings.stack.prometheus_port}"
        return {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "5s",
                       "external_labels": {"environment": self.settings.environment}},
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": [
                {"job_name": "mosaic",
                 "file_sd_configs": [{"files": [str(self.targets_dir / "*.json")],
                                      "refresh_interval": "5s"}]},
                {"job_name": "prometheus",
                 "static_configs": [{"targets": [own]}]},
            ],
        }

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [str(self.binary), f"--config.file={self.data_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.data_dir / 'data'}",
                "--storage.tsdb.retention.time=7d",
                f"--web.listen-address=127.0.0.1:{self.settings.stack.prometheus_port}",
                "--web.enable-lifecycle"], {}

    def healthy(self) -> bool:
        return http_call(self.url, "GET", "/-/ready")[0] == 200

    def where(self) -> str:
        return self.url

    def reload(self) -> None:
        """Re-read the config and rules (``--web.enable-lifecycle``)."""
        if http_call(self.url, "POST", "/-/reload")[0] != 200:
            raise StackError(f"prometheus at {self.url} refused /-/reload")


def build_binaries(go: str, version: str, folder: Path) -> float:
    """Download Prometheus' module source and build prometheus + promtool into ``folder``.

    Returns the seconds spent. Each binary is renamed into place when complete.
    """
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    out = run([go, "mod", "download", "-json", f"{MODULE}@v{version}"],
              what=f"go mod download {MODULE}@v{version}", cwd=folder, timeout=900,
              expect="Prometheus's source and its modules from the Go proxy, a few minutes")
    try:
        source = Path(json.loads(out)["Dir"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(f"go mod download gave no source Dir:\n{out[-2000:]}") from exc
    env = {**os.environ, "GOWORK": "off", "GOFLAGS": "-mod=mod -buildvcs=false"}
    tmp = folder / f".build.{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    try:
        # remove_all_sd (Prometheus >= 3.10) leaves out the cloud service discoveries
        # (AWS, Azure, GCE, ...); file and HTTP discovery, which the stack uses, stay. Cold
        # build of both binaries: 7 min on 2 shared cores (measured), far less than all.
        run([go, "build", "-tags", "remove_all_sd", "-trimpath", "-ldflags",
             f"-X github.com/prometheus/common/version.Version={version}",
             "-o", str(tmp) + "/", "./cmd/prometheus", "./cmd/promtool"],
            what=f"go build prometheus {version} (in {source})", cwd=source, env=env,
            timeout=3600, expect="about 7 minutes on 2 cores")
        for name in ("promtool", "prometheus"):  # prometheus last: installed() checks both
            (tmp / name).chmod(0o755)
            os.replace(tmp / name, folder / name)
    finally:
        for leftover in tmp.glob("*"):
            leftover.unlink()
        tmp.rmdir()
    return time.monotonic() - started
