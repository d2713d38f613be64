"""Apache Kafka 4.x as a single KRaft node (broker + controller), jars from Maven Central.

Transactions work on one node because every internal topic is configured with a single
replica (see resources/kafka/server.properties). Topics are not auto-created: the project
creates them, as in production.
"""

from __future__ import annotations

from pathlib import Path

from mosaic.errors import StackError
from stack import maven
from stack.base import Service, port_open, run

HOST = "127.0.0.1"  # loopback only: the local stack is never reachable from outside
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


class Kafka(Service):
    name = "kafka"

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
        host, _, port = self.settings.kafka.bootstrap_servers.split(",")[0].rpartition(":")
        if host not in (HOST, "localhost") or not port.isdigit():
            raise StackError(
                f"MOSAIC_KAFKA__BOOTSTRAP_SERVERS={self.settings.kafka.bootstrap_servers!r}: "
                f"the local stack serves only {HOST}:<port>"
            )
        return int(port)

    # -- Service ----------------------------------------------------------------------
    def install(self) -> None:
        maven.ensure_jars(self.home, "kafka/pom.xml", self.settings.stack.kafka_version)

    def prepare(self) -> None:
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(maven.render(
            "kafka/server.properties", host=HOST, port=str(self._port()),
            controller_port=str(self.settings.kafka.controller_port),
            log_dirs=str(self.log_dirs),
        ))
        self.log4j2.write_text(maven.render("kafka/log4j2.properties"))
        if not (self.log_dirs / "meta.properties").exists():
            self._format()

    def _format(self) -> None:
        """Format the KRaft metadata log once; the cluster id is kept next to it."""
        id_file = self.data_dir / "cluster.id"
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
