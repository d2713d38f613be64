"""Apache Cassandra 5.0 as a single node, jars from Maven Central (cassandra-all).

Cassandra is started directly through ``CassandraDaemon`` with the JVM flags its own
launcher scripts would add on Java 17, tuned to start fast on a small machine. SAI and
vector search (``VECTOR<FLOAT, n>``, ``ORDER BY ... ANN OF``) are part of 5.0 itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mosaic.errors import StackError
from stack import maven
from stack.base import Service, port_open

HOST = "127.0.0.1"  # loopback only: the local stack is never reachable from outside
STORAGE_PORT = 7000  # gossip/internode; a single node still binds it
JMX_PORT = 7199  # local-only JMX, so nodetool works for troubleshooting
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
STORAGE_DIRS = ("data", "commitlog", "hints", "saved_caches", "cdc_raw", "triggers")

# Upstream conf/jvm17-server.options: Cassandra reaches into JDK internals (off-heap
# memory, file channels, attach API for jamm...), which Java 17 hides unless opened.
_JDK17_EXPORTS = (
    "java.base/jdk.internal.misc", "java.base/java.lang.ref",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi", "java.rmi/sun.rmi.registry",
    "java.rmi/sun.rmi.server", "java.sql/java.sql", "jdk.unsupported/sun.misc",
    "jdk.compiler/com.sun.tools.javac.file", "jdk.attach/sun.tools.attach",
)
_JDK17_OPENS = (
    "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
    "java.base/jdk.internal.reflect", "java.base/jdk.internal.math",
    "java.base/jdk.internal.module", "java.base/jdk.internal.util.jar",
    "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch", "java.base/java.io",
    "java.base/java.lang.reflect", "jdk.compiler/com.sun.tools.javac", "java.base/java.lang",
    "java.base/java.util",
)
_JVM_FLAGS = (
    "-Xms1G", "-Xmx1G",
    # Upstream G1 settings (jvm17-server.options).
    "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
    "-XX:G1RSetUpdatingPauseTimePercent=5", "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
    # No hsperfdata mmap file: its writes can stall GC safepoints on a busy disk.
    "-XX:+PerfDisableSharedMem",
    # Stop on OutOfMemoryError instead of limping on with possibly corrupt state.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true", "-Djdk.attach.allowAttachSelf=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true", "-Dio.netty.allocator.maxOrder=11",
    # Fast start of a lone node: nobody to gossip with, no ring to wait for.
    "-Dcassandra.skip_wait_for_gossip_to_settle=0", "-Dcassandra.ring_delay_ms=1000",
    # Keep stdout open (the daemon closes it otherwise) so the log file gets everything.
    "-Dcassandra-foreground=yes",
)


def jdk17_flags() -> list[str]:
    flags = [f"--add-exports={m}=ALL-UNNAMED" for m in _JDK17_EXPORTS]
    return flags + [f"--add-opens={m}=ALL-UNNAMED" for m in _JDK17_OPENS]


class Cassandra(Service):
    name = "cassandra"

    @property
    def home(self) -> Path:
        return self.cache_dir / f"cassandra-{self.settings.stack.cassandra_version}"

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    @property
    def config(self) -> Path:
        return self.data_dir / "cassandra.yaml"

    @property
    def logback(self) -> Path:
        return self.data_dir / "logback.xml"

    def _host(self) -> str:
        hosts = self.settings.cassandra.hosts
        if hosts[0] not in (HOST, "localhost"):
            raise StackError(
                f"MOSAIC_CASSANDRA__HOSTS={list(hosts)!r}: the local stack serves only {HOST}"
            )
        return HOST

    # -- Service ----------------------------------------------------------------------
    def install(self) -> None:
        maven.ensure_jars(self.home, "cassandra/pom.xml", self.settings.stack.cassandra_version)

    def prepare(self) -> None:
        for sub in STORAGE_DIRS:
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.config.write_text(maven.render(
            "cassandra/cassandra.yaml", host=self._host(), data=str(self.data_dir),
            storage_port=str(STORAGE_PORT), native_port=str(self.settings.cassandra.port),
        ))
        self.logback.write_text(maven.render("cassandra/logback.xml"))

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [maven.java(), *_JVM_FLAGS, *jdk17_flags()]
        jamm = maven.jar(self.lib, "jamm")
        if jamm is not None:
            # jamm sizes objects for memtable accounting; loaded as an agent it can use
            # the JVM's own Instrumentation, its most exact strategy (upstream does this).
            cmd.append(f"-javaagent:{jamm}")
        cmd += [
            f"-Dcassandra.config=file://{self.config}",
            f"-Dcassandra.storagedir={self.data_dir}",
            f"-Dcassandra.logdir={self.log_file.parent}",
            # An existing (empty) triggers dir; otherwise Cassandra warns that it is missing.
            f"-Dcassandra.triggers_dir={self.data_dir / 'triggers'}",
            f"-Dlogback.configurationFile=file://{self.logback}",
            f"-Dcassandra.jmx.local.port={JMX_PORT}",
            "-cp", f"{self.lib}/*", MAIN_CLASS,
        ]
        return cmd, {}

    def after_start(self) -> None:
        """The default keyspace at the code's schema version (``mosaic db migrate``)."""
        from mosaic.migrations import migrate_keyspace

        migrate_keyspace(self.settings.cassandra)

    def up(self) -> str:
        line = super().up()
        self.after_start()  # also when reusing a running node (a no-op when up to date)
        return line

    def healthy(self) -> bool:
        """The native protocol answers a real query, not just an open port."""
        port = self.settings.cassandra.port
        if not port_open(self._host(), port):
            return False  # skip the driver's own connection timeouts while starting
        return query_release_version(self._host(), port) is not None

    def where(self) -> str:
        return f"cassandra://{self._host()}:{self.settings.cassandra.port}"


def query_release_version(host: str, port: int, timeout: float = 3.0) -> str | None:
    """``release_version`` from ``system.local``, or None if the node does not answer."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    # A node that is still starting makes the driver log connection errors at WARNING;
    # they are expected here and would only clutter ``mosaic stack up``.
    driver_log = logging.getLogger("cassandra")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout)
    cluster = Cluster(
        [host], port=port, connect_timeout=timeout, control_connection_timeout=timeout,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        row = cluster.connect().execute("SELECT release_version FROM system.local").one()
    except Exception:  # noqa: BLE001 - any driver failure means "not ready yet"
        return None
    finally:
        cluster.shutdown()
        driver_log.setLevel(level)
    return str(row.release_version) if row is not None else None
