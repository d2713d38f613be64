"""Shared machinery for the local stack: processes, pid files, health waits.

Every service installs into the cache dir (shared by all clones on the machine), keeps
its runtime data, log and pid file under the data dir, and is started detached so that
it outlives the command that started it. ``down`` stops only what a pid file names.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mosaic.errors import StackError
from mosaic.settings import Settings


@dataclass(frozen=True)
class Status:
    name: str
    running: bool
    healthy: bool
    pid: int | None
    where: str
    detail: str = ""


def require_tool(tool: str, hint: str) -> str:
    """Return the path of ``tool`` or raise a clear error naming how to get it."""
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"'{tool}' is not on PATH: {hint}")
    return path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


HEARTBEAT_SECONDS = 30.0


def run(cmd: Sequence[str], *, what: str, cwd: Path | None = None,
        env: Mapping[str, str] | None = None, timeout: float = 1800,
        expect: str | None = None) -> str:
    """Run a set-up step; on failure raise with the step's name and its output tail.

    ``expect`` (e.g. "first use only; about a minute") marks a long step: it is announced
    with that estimate, and a line every 30 s says it is still running, so a cold
    ``stack up`` never sits silent for minutes."""
    beat = _Heartbeat(what, expect) if expect is not None else None
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, env=dict(env) if env is not None else None,
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: timed out after {timeout:.0f}s") from exc
    finally:
        if beat is not None:
            beat.stop()
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
        raise StackError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return proc.stdout


class _Heartbeat:
    def __init__(self, what: str, expect: str) -> None:
        import threading

        self._what, self._started = what, time.monotonic()
        self._stopped = threading.Event()
        print(f"... {what} ({expect})", flush=True)
        self._thread = threading.Thread(target=self._beat, name="stack-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            print(f"    still {self._what}: {_clock(time.monotonic() - self._started)} so far",
                  flush=True)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(1)
        print(f"    {self._what}: done in {_clock(time.monotonic() - self._started)}",
              flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def wait_until(check: Callable[[], bool], *, what: str, timeout: float,
               proc_alive: Callable[[], bool] | None = None, log: Path | None = None,
               interval: float = 0.5) -> float:
    """Poll ``check`` until it is true; fail fast if the process died. Returns seconds."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if proc_alive is not None and not proc_alive():
            raise StackError(f"{what} exited during start-up{_log_tail(log)}")
        if time.monotonic() - start > timeout:
            raise StackError(f"{what} not ready after {timeout:.0f}s{_log_tail(log)}")
        time.sleep(interval)


def _log_tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(tail)


class Service(ABC):
    """One server of the local stack."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache_dir = settings.stack.cache_dir
        self.data_dir = settings.stack.data_dir / self.name
        self.pid_file = settings.stack.data_dir / "run" / f"{self.name}.pid"
        self.log_file = settings.stack.data_dir / "logs" / f"{self.name}.log"

    # -- to implement -------------------------------------------------------------
    @abstractmethod
    def install(self) -> None:
        """Fetch and build what is missing into the cache dir (idempotent)."""

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The server's command line and extra environment (after ``prepare``)."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the service really answers (a protocol request, not just a port)."""

    @abstractmethod
    def where(self) -> str:
        """Human-readable address(es), e.g. ``kafka://127.0.0.1:9092``."""

    def prepare(self) -> None:
        """Write config and initialise data before the first start (idempotent)."""

    def after_start(self) -> None:
        """One-off steps once healthy (create buckets, keyspaces...)."""

    def run_as(self) -> str | None:
        """A user to run the server as (PostgreSQL refuses root)."""
        return None

    # -- shared behaviour -----------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def status(self) -> Status:
        pid = self.pid()
        healthy = self.healthy()
        return Status(self.name, pid is not None, healthy, pid, self.where())

    def up(self) -> str:
        """Start unless already healthy. Returns a short line on what happened."""
        if self.healthy():
            owner = "ours" if self.pid() else "already running, not started by us"
            return f"{self.name}: reused ({owner}) at {self.where()}"
        started = time.monotonic()
        self.install()
        self.prepare()
        for path in (self.pid_file.parent, self.log_file.parent, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        cmd, extra_env = self.command()
        env = {**os.environ, **extra_env}
        user = self.run_as()
        if user is not None:
            cmd = ["runuser", "-u", user, "--", *cmd]
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.data_dir, start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        wait_until(self.healthy, what=self.name,
                   timeout=self.settings.stack.start_timeout_seconds,
                   proc_alive=lambda: proc.poll() is None, log=self.log_file)
        self.after_start()
        return f"{self.name}: started in {time.monotonic() - started:.1f}s at {self.where()}"

    def down(self, wipe: bool = False) -> str:
        pid = self.pid()
        msg = f"{self.name}: not running (no pid file of ours)"
        if pid is not None:
            _terminate_group(pid)
            msg = f"{self.name}: stopped (pid {pid})"
        self.pid_file.unlink(missing_ok=True)
        if wipe and self.data_dir.exists():
            shutil.rmtree(self.data_dir)
            msg += ", data wiped"
        return msg


def _terminate_group(pid: int, grace_seconds: float = 30.0) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
