"""PostgreSQL for Nakama: Debian's package, run as a PRIVATE cluster on loopback.

The distro's own cluster (``main`` on 5432) is left alone. Ours lives in
``<data dir>/postgres``, is owned by the ``postgres`` user (the server refuses root),
listens on 127.0.0.1 only, and lets the application role in by password (scram) over
TCP. The superuser is reachable only through the cluster's own unix socket (peer auth),
which is how the role and database are created.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from mosaic.errors import StackError
from mosaic.settings import Settings
from stack.base import Service, require_tool, run

PG_USER = "postgres"
PG_LIB = Path("/usr/lib/postgresql")
LOOPBACK = "127.0.0.1"

# Runs as the superuser through psql, with -v role/db (quoted by psql itself); the password
# comes from the environment (\getenv, psql 15+), never from the command line. A failing
# statement is not written to the server log (it would carry the password: seen when two
# `stack up` raced on the role, "tuple concurrently updated"), and an advisory lock makes
# concurrent runs take turns.
_ENSURE_SQL = """\
SET log_min_error_statement = 'panic';
SELECT pg_advisory_lock(hashtext('mosaic-stack-ensure-role')) AS locked \\gset
\\getenv password MOSAIC_POSTGRES_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \\gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec
ALTER DATABASE :"db" OWNER TO :"role";
"""


def pg_bin_dir() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/<major>/bin`` that has initdb."""
    found = [p.parent for p in PG_LIB.glob("*/bin/initdb")]
    return max(found, key=lambda p: _major(p.parent.name), default=None)


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _pg_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError as exc:
        raise StackError(
            f"no '{PG_USER}' OS user: it comes with Debian's 'postgresql' package"
        ) from exc
    return entry.pw_uid, entry.pw_gid


def _query_ok(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    """True when ``cmd`` (a psql ``select 1``) prints exactly ``1``."""
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=10, check=False,
            env={**os.environ, **(env or {})},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "1"


class Postgres(Service):
    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._booting = False

    # -- install / configure --------------------------------------------------------
    def install(self) -> None:
        if pg_bin_dir() is not None:
            return
        apt = require_tool(
            "apt-get", "PostgreSQL comes from Debian's 'postgresql' package; "
            "install it with the OS package manager (Debian 12 ships 15)",
        )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run([apt, "update"], what="apt-get update", env=env, timeout=900)
        run([apt, "install", "-y", "postgresql"], what="apt-get install -y postgresql", env=env)
        if pg_bin_dir() is None:
            raise StackError(f"'postgresql' installed but no {PG_LIB}/*/bin/initdb exists")

    def run_as(self) -> str:
        return PG_USER

    def tool(self, name: str) -> str:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise StackError(f"PostgreSQL is not installed (no {PG_LIB}/*/bin/initdb)")
        return str(bin_dir / name)

    def prepare(self) -> None:
        if os.geteuid() != 0:
            raise StackError("the private PostgreSQL cluster is set up as root "
                             f"(it chowns {self.data_dir} to '{PG_USER}' and runs runuser)")
        uid, gid = _pg_ids()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.data_dir, uid, gid)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(self._hba())
        os.chown(hba, uid, gid)
        hba.chmod(0o600)

    def _initdb(self) -> None:
        if any(self.data_dir.iterdir()):
            raise StackError(f"{self.data_dir} is not empty but holds no cluster (no "
                             "PG_VERSION): run 'mosaic stack down --wipe postgres'")
        run(["runuser", "-u", PG_USER, "--", self.tool("initdb"), "-D", str(self.data_dir),
             "-U", PG_USER, "-E", "UTF8", "--no-locale",
             "--auth-local=peer", "--auth-host=scram-sha-256"],
            what=f"initdb {self.data_dir} (as '{PG_USER}'; every parent dir must be "
                 "traversable by that user)")

    def _hba(self) -> str:
        pg = self.settings.postgres
        return (
            "# Written by stack/postgres.py on every start; edits are lost.\n"
            f"local  all          {PG_USER}  peer\n"
            f"host   {pg.database}  {pg.user}  {LOOPBACK}/32  scram-sha-256\n"
        )

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [
            self.tool("postgres"), "-D", str(self.data_dir),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", f"port={self.settings.postgres.port}",
            "-c", f"unix_socket_directories={self.data_dir}",
            "-c", "password_encryption=scram-sha-256",
            "-c", "max_connections=200",
        ], {}

    # -- health ---------------------------------------------------------------------------
    def healthy(self) -> bool:
        # While booting, the application role may not exist yet: ask as the superuser.
        return self._superuser_answers() if self._booting else self._app_answers()

    def _app_answers(self) -> bool:
        pg = self.settings.postgres
        if pg_bin_dir() is None:
            return False
        cmd = [self.tool("psql"), "-X", "-w", "-h", LOOPBACK, "-p", str(pg.port),
               "-U", pg.user, "-d", pg.database, "-Atc", "select 1"]
        env = {"PGPASSWORD": pg.password.get_secret_value(), "PGCONNECT_TIMEOUT": "3"}
        return _query_ok(cmd, env)

    def app_sql(self, sql: str, *, timeout: float = 60.0) -> list[list[str]]:
        """Run ``sql`` as Nakama's own role (tests and benchmarks: fixtures, checks);
        the rows as tab-separated fields."""
        pg = self.settings.postgres
        cmd = [self.tool("psql"), "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-h", LOOPBACK,
               "-p", str(pg.port), "-U", pg.user, "-d", pg.database, "-At", "-F", "\t",
               "-c", sql]
        env = {**os.environ, "PGPASSWORD": pg.password.get_secret_value(),
               "PGCONNECT_TIMEOUT": "5"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise StackError(f"psql failed: {proc.stderr.strip()[:300]}")
        return [line.split("\t") for line in proc.stdout.splitlines() if line]

    def _superuser_psql(self) -> list[str]:
        return ["runuser", "-u", PG_USER, "--", self.tool("psql"), "-X", "-w",
                "-h", str(self.data_dir), "-p", str(self.settings.postgres.port),
                "-U", PG_USER, "-d", "postgres"]

    def _superuser_answers(self) -> bool:
        if pg_bin_dir() is None:
            return False
        return _query_ok([*self._superuser_psql(), "-Atc", "select 1"])

    # -- lifecycle ------------------------------------------------------------------------
    def after_start(self) -> None:
        """Create the application role and database (idempotent; resets the password)."""
        pg = self.settings.postgres
        cmd = [*self._superuser_psql(), "-v", "ON_ERROR_STOP=1", "-q",
               "-v", f"role={pg.user}", "-v", f"db={pg.database}"]
        env = {**os.environ, "MOSAIC_POSTGRES_PASSWORD": pg.password.get_secret_value()}
        proc = subprocess.run(cmd, input=_ENSURE_SQL, capture_output=True, text=True,
                              timeout=60, check=False, env=env)
        if proc.returncode != 0:
            raise StackError(f"creating role '{pg.user}' / database '{pg.database}' failed:\n"
                             + (proc.stdout + proc.stderr).strip())

    def up(self) -> str:
        self._booting = True
        try:
            line = super().up()
        finally:
            self._booting = False
        self.after_start()  # also when reusing a running cluster
        if not self._app_answers():
            raise StackError(f"postgres runs but role '{self.settings.postgres.user}' cannot "
                             f"run a query over TCP at {self.where()}; see {self.log_file}")
        return line

    def down(self, wipe: bool = False) -> str:
        # Fast shutdown first: base's SIGTERM is a "smart" shutdown that waits for clients,
        # and runuser SIGKILLs its child two seconds after a SIGTERM.
        pid = self.pid()
        if pid is None or not (self.data_dir / "postmaster.pid").exists():
            return super().down(wipe)
        run(["runuser", "-u", PG_USER, "--", self.tool("pg_ctl"), "stop",
             "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60"],
            what="pg_ctl stop -m fast", timeout=90)
        super().down(wipe)  # the pid file, runuser if still there, and the wipe
        wiped = ", data wiped" if wipe and not self.data_dir.exists() else ""
        return f"{self.name}: stopped (pid {pid}, fast shutdown){wiped}"

    def where(self) -> str:
        pg = self.settings.postgres
        return f"postgresql://{pg.user}@{LOOPBACK}:{pg.port}/{pg.database}"
