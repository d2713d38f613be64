"""Fetch a JVM server's jars from Maven Central with the project's own resource pom.

Kafka and Cassandra are plain Maven artifacts, so ``mvn dependency:copy-dependencies`` on a
tiny pom yields a runnable ``lib/`` without any tarball or Docker image. The copy lands in
a temporary sibling directory and is renamed into place only once complete, so an
interrupted download never leaves a cache that looks finished.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

from mosaic.errors import StackError
from stack.base import require_tool, run

RESOURCES = Path(__file__).parent / "resources"
COPY_DEPENDENCIES = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
JAVA_HINT = "install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless)"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MVN_HINT = "install Maven (Debian: apt-get install maven); it fetches the jars from Maven Central"


def render(resource: str, **values: str) -> str:
    """A resource file with ``${name}`` placeholders filled (missing ones are an error)."""
    text = (RESOURCES / resource).read_text()
    try:
        return Template(text).substitute(values)
    except KeyError as exc:
        raise StackError(f"resource {resource} needs a value for {exc}") from exc


def java() -> str:
    return require_tool("java", JAVA_HINT)


def ensure_jars(target: Path, pom_resource: str, version: str) -> Path:
    """Return ``target/lib``, fetching the pom's runtime dependencies there if missing."""
    lib = target / "lib"
    if _has_jars(lib):
        return lib
    mvn = require_tool("mvn", MVN_HINT)
    java()  # Maven itself needs a JDK; fail with the clear hint, not Maven's message
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared by all users
    try:
        (staging / "pom.xml").write_text(render(pom_resource, version=version))
        _mvn(mvn, staging, what=f"mvn fetching {pom_resource} {version} from Maven Central")
        if not _has_jars(staging / "lib"):
            raise StackError(f"mvn finished but {staging / 'lib'} holds no jars")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return lib


def _mvn(mvn: str, cwd: Path, what: str) -> None:
    cmd = [mvn, "-q", "-B", COPY_DEPENDENCIES, "-DoutputDirectory=lib", "-DincludeScope=runtime"]
    try:
        run(cmd, what=what, cwd=cwd, expect="first use only; the jars (Kafka ~45, 43 MB; "
                                          "Cassandra ~100, 67 MB) usually take under a "
                                          "minute, longer on a slow network")
    except StackError as exc:
        # Debian's Maven prints colour resets even in batch mode; keep the message readable.
        raise StackError(_ANSI.sub("", str(exc))) from exc


def _has_jars(lib: Path) -> bool:
    return lib.is_dir() and any(lib.glob("*.jar"))


def _publish(staging: Path, target: Path) -> None:
    if target.exists():
        if _has_jars(target / "lib"):
            return  # a parallel install won the race; its copy is complete
        shutil.rmtree(target)  # an old, jar-less leftover: replace it
    try:
        os.rename(staging, target)
    except OSError as exc:
        if not _has_jars(target / "lib"):  # not just a parallel install finishing first
            raise StackError(f"could not move {staging} to {target}: {exc}") from exc


def jar(lib: Path, prefix: str) -> Path | None:
    """The jar in ``lib`` whose file name is ``<prefix>-<version>.jar``, if any."""
    matches = sorted(lib.glob(f"{prefix}-[0-9]*.jar"))
    return matches[-1] if matches else None
