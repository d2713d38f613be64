"""Apache Kafka 4.x in KRaft mode (broker + controller per node), jars from Maven Central.

One node by default. Transactions work on one node because every internal topic is
configured with a single replica (see resources/kafka/server.properties). With
``kafka.brokers = 3`` (``mosaic stack up --kafka-brokers 3``) the stack runs a 3-node
cluster, services ``kafka-1..3``: node i listens on the i-th ``bootstrap_servers`` entry
(or the first port + 100 * (i - 1)) and on ``controller_port + i - 1``; internal topics get
replication factor 3 and min.insync.replicas 2. Give it its own ports and data dir
(``MOSAIC_STACK__DATA_DIR``) to run it beside the single-broker stack. Topics are not
auto-created: the project creates them, as in production.
"""

from __future__ import annotations

from pathlib import Path

from mosaic.errors import StackError
from mosaic.settings import Settings
from stack import maven
from stack.base import Service, port_open, run

HOST = "127.0.0.1"  # loopback only: the local stack is never reachable from outside
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


def broker_ports(settings: Settings) -> list[int]:
    """The client port of each node: the bootstrap list, else the first port + 100 * i."""
    entries = [e.strip() for e in settings.kafka.bootstrap_servers.split(",") if e.strip()]
    ports = []
    for entry in entries:
        host, _, port = entry.rpartition(":")
        if host not in (HOST, "localhost") or not port.isdigit():
            raise StackError(
                f"MOSAIC_KAFKA__BOOTSTRAP_SERVERS={settings.kafka.bootstrap_servers!r}: "
                f"the local stack serves only {HOST}:<port>")
        ports.append(int(port))
    count = settings.kafka.brokers
    while len(ports) < count:
        ports.append(ports[0] + 100 * len(ports))
    return ports[:count]


def nodes(settings: Settings) -> list[Kafka]:
    """Every node of the local Kafka (one, or a cluster of ``kafka.brokers``)."""
    return [Kafka(settings, node=i) for i in range(1, settings.kafka.brokers + 1)]


class Kafka(Service):
    name = "kafka"

    def __init__(self, settings: Settings, node: int = 1) -> None:
        self.node = node
        self.cluster = settings.kafka.brokers > 1
        self.name = f"kafka-{node}" if self.cluster else "kafka"
        super().__init__(settings)

    # -- paths ------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.cache_dir / f"kafka-{self.settings.stack.kafka_version}"

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j2(self) -> Path:
        return self.data_dir / "log4j2.properties"

    def _port(self) -> int:
        return broker_ports(self.settings)[self.node - 1]

    def _controller_port(self, node: int | None = None) -> int:
        return self.settings.kafka.controller_port + (node or self.node) - 1

    # -- Service ----------------------------------------------------------------------
    def install(self) -> None:
        maven.ensure_jars(self.home, "kafka/pom.xml", self.settings.stack.kafka_version)

    def prepare(self) -> None:
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        count = self.settings.kafka.brokers
        voters = ",".join(f"{i}@{HOST}:{self._controller_port(i)}" for i in range(1, count + 1))
        replication = min(3, count)
        self.properties.write_text(maven.render(
            "kafka/server.properties", host=HOST, port=str(self._port()),
            controller_port=str(self._controller_port()), node_id=str(self.node),
            voters=voters, replication=str(replication),
            min_isr=str(max(1, replication - 1)), log_dirs=str(self.log_dirs),
        ))
        self.log4j2.write_text(maven.render("kafka/log4j2.properties"))
        if not (self.log_dirs / "meta.properties").exists():
            self._format()

    def _format(self) -> None:
        """Format the KRaft metadata log once; the cluster id is kept next to it."""
        # One id for every node of a cluster (kept beside the nodes' data dirs).
        id_file = (self.settings.stack.data_dir / "kafka-cluster.id" if self.cluster
                   else self.data_dir / "cluster.id")
        if self.cluster:
            _create_once(id_file, _random_cluster_id())  # nodes format concurrently
        if not id_file.exists():
            out = run(self._java(STORAGE_TOOL, "random-uuid"), what="kafka random-uuid")
            id_file.write_text(out.strip().splitlines()[-1])
        run(self._java(STORAGE_TOOL, "format", "-t", id_file.read_text().strip(),
                       "-c", str(self.properties), "--ignore-formatted"),
            what="kafka storage format")

    def _java(self, main: str, *args: str, heap: str = "-Xmx256m") -> list[str]:
        return [
            maven.java(), heap, "-cp", f"{self.lib}/*",
            f"-Dlog4j2.configurationFile=file:{self.log4j2}", main, *args,
        ]

    def command(self) -> tuple[list[str], dict[str, str]]:
        # Kafka 4 reads the log4j2 file itself; no KAFKA_* launcher variables are involved.
        return self._java(MAIN_CLASS, str(self.properties), heap="-Xmx512m"), {}

    def healthy(self) -> bool:
        """A metadata request that lists this broker, not just an open port."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        # librdkafka waits out the whole timeout on a refused connection; skip that cost
        # while nothing listens yet (start-up polling, the first check of ``up``).
        if not port_open(HOST, self._port()):
            return False
        admin = AdminClient({
            "bootstrap.servers": f"{HOST}:{self._port()}",
            "socket.timeout.ms": 1000,
            "socket.connection.setup.timeout.ms": 1000,
            "log_level": 0,  # connection-refused chatter while starting is expected
        })
        try:
            metadata = admin.list_topics(timeout=2)
        except KafkaException:
            return False
        return bool(metadata.brokers)

    def where(self) -> str:
        return f"kafka://{HOST}:{self._port()}"


def _random_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: a UUID, base64url without padding."""
    import base64
    import uuid

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _create_once(path: Path, content: str) -> None:
    """Write ``path`` unless it exists (atomic: the first of concurrent writers wins)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(content)
