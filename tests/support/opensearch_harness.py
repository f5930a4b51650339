"""A real OpenSearch node (or a small cluster) for tests, built from Maven Central artifacts.

``prepare()`` fetches the integ-test distribution, the k-NN plugin, the Painless module (which
k-NN extends) and the Mustache module (stored search templates) — the integ-test zip ships without
them — with ``mvn dependency:copy-dependencies``,
assembles them into a node home in a cache folder outside the clone, and reuses it afterwards.
``start_node()`` / ``start_cluster()`` run nodes on 127.0.0.1 with a small heap and their data in
a temp dir. OpenSearch refuses to run as root, so under root the JVM runs as a system user
created on demand.

By hand::

    python tests/support/opensearch_harness.py start             # one node, prints its URL
    python tests/support/opensearch_harness.py start --nodes 2   # a 2-node cluster

Environment: ``GEMSEARCH_OPENSEARCH_VERSION`` (default 2.19.1), ``GEMSEARCH_OPENSEARCH_CACHE``
(where the node home is kept), ``GEMSEARCH_OPENSEARCH_HEAP`` (default 512m), ``JAVA_HOME``.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_VERSION = os.environ.get("GEMSEARCH_OPENSEARCH_VERSION", "2.19.1")
DEFAULT_HEAP = os.environ.get("GEMSEARCH_OPENSEARCH_HEAP", "512m")
RUN_USER = "gemsearch-opensearch"
READY_MARKER = ".gemsearch-ready"
POM_TEMPLATE = Path(__file__).with_name("opensearch_node_pom.xml")
# Bumped when the assembled node home changes, so cached homes of an older layout are rebuilt.
HOME_LAYOUT = 2


@dataclass(frozen=True)
class Module:
    """A module the integ-test zip lacks, built from Maven jars (the module jar + its pom's libraries)."""

    name: str
    jar: str  # Maven artifactId of the module jar
    libraries: tuple[str, ...]
    classes: tuple[str, ...]  # candidate plugin classes (renamed across versions)
    description: str
    policy: str  # plugin-security.policy grants


MODULES = (
    # k-NN declares lang-painless as an extended plugin; Painless compiles scripts into classes.
    Module(
        "lang-painless",
        "lang-painless",
        (
            "opensearch-scripting-painless-spi",
            "antlr4-runtime",
            "asm",
            "asm-util",
            "asm-tree",
            "asm-commons",
            "asm-analysis",
        ),
        ("org.opensearch.painless.PainlessModulePlugin", "org.opensearch.painless.PainlessPlugin"),
        "Painless scripting language",
        'permission java.lang.RuntimePermission "createClassLoader";\n'
        '  permission java.lang.RuntimePermission "getClassLoader";',
    ),
    # Stored search templates (opensearch_templates/*.mustache) need the Mustache script engine.
    Module(
        "lang-mustache",
        "lang-mustache-client",
        ("compiler",),
        (
            "org.opensearch.script.mustache.MustacheModulePlugin",
            "org.opensearch.script.mustache.MustachePlugin",
        ),
        "Mustache scripting integration for OpenSearch",
        'permission java.lang.reflect.ReflectPermission "suppressAccessChecks";\n'
        '  permission java.lang.RuntimePermission "accessDeclaredMembers";',
    ),
)


class HarnessError(RuntimeError):
    """The node could not be fetched, installed or started; the message says which step failed."""


def cache_root() -> Path:
    """Where prepared node homes live: outside the clone, readable by the node's user."""
    if env := os.environ.get("GEMSEARCH_OPENSEARCH_CACHE"):
        return Path(env)
    if os.geteuid() == 0:  # /root is not readable by the unprivileged user that runs the JVM
        return Path("/var/cache/gemsearch/opensearch")
    return Path.home() / ".cache" / "gemsearch" / "opensearch"


# ----------------------------------------------------------------------------- Java


def _java_major(java_home: Path) -> int | None:
    release = java_home / "release"
    if release.is_file():
        match = re.search(r'JAVA_VERSION="(\d+)', release.read_text())
        if match:
            return int(match.group(1))
    java = java_home / "bin" / "java"
    if not java.is_file():
        return None
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def find_java(version: str = DEFAULT_VERSION, search_dirs: Sequence[Path] = (Path("/usr/lib/jvm"),)) -> Path:
    """A JAVA_HOME whose major version runs this OpenSearch (2.x: 11-21, 3.x: 21+)."""
    low, high = (21, 99) if int(version.split(".")[0]) >= 3 else (11, 21)
    candidates: list[Path] = []
    if env := os.environ.get("JAVA_HOME"):
        candidates.append(Path(env))
    if java := shutil.which("java"):
        candidates.append(Path(java).resolve().parent.parent)
    for jvm_dir in search_dirs:
        if jvm_dir.is_dir():
            candidates.extend(sorted(p for p in jvm_dir.iterdir() if p.is_dir() and not p.is_symlink()))
    seen: list[str] = []
    for home in candidates:
        major = _java_major(home)
        seen.append(f"{home} (Java {major})")
        if major is not None and low <= major <= high:
            return home
    raise HarnessError(
        f"Java not found: OpenSearch {version} needs a JDK {low}-{high if high < 99 else 'or newer'}; "
        f"looked at: {', '.join(seen) or 'JAVA_HOME, PATH and /usr/lib/jvm (nothing there)'}. "
        "Install one (e.g. apt-get install openjdk-17-jdk-headless) or set JAVA_HOME."
    )


# ----------------------------------------------------------------------------- fetch + install


def _run(cmd: list[str], step: str, **kwargs: Any) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise HarnessError(f"{step}: {cmd[0]} not found ({exc})") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise HarnessError(f"{step} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _fetch_artifacts(version: str, dest: Path) -> None:
    if shutil.which("mvn") is None:
        raise HarnessError("Maven failure: mvn is not on PATH (install it, e.g. apt-get install maven)")
    pom_dir = dest / "pom"
    pom_dir.mkdir(parents=True)
    shutil.copy(POM_TEMPLATE, pom_dir / "pom.xml")
    _run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(pom_dir / "pom.xml"),
            "dependency:copy-dependencies",
            f"-Dopensearch.version={version}",
            f"-DoutputDirectory={dest}",
            "-DincludeArtifactIds=" + ",".join(["opensearch", "opensearch-knn", *_module_artifacts()]),
        ],
        "Maven failure while fetching OpenSearch artifacts from Maven Central",
    )


def _module_artifacts() -> list[str]:
    return [name for m in MODULES for name in (m.jar, *m.libraries)]


def _assemble_module(module: Module, artifacts: Path, home: Path, version: str) -> None:
    """Build ``modules/<name>`` from its Maven jars, as the full distribution ships it."""
    folder = home / "modules" / module.name
    folder.mkdir(parents=True, exist_ok=True)
    for jar in artifacts.glob("*.jar"):
        if any(
            re.fullmatch(rf"{re.escape(n)}-\d[\w.\-]*\.jar", jar.name)
            for n in (module.jar, *module.libraries)
        ):
            shutil.copy(jar, folder / jar.name)
    jar = folder / f"{module.jar}-{version}.jar"
    if not jar.is_file():
        raise HarnessError(f"Maven failure: {jar.name} was not fetched")
    (folder / "plugin-descriptor.properties").write_text(
        f"description={module.description}\n"
        f"version={version}\nname={module.name}\nclassname={_plugin_class(jar, module.classes)}\n"
        f"java.version=11\nopensearch.version={version}\nextended.plugins=\nhas.native.controller=false\n"
    )
    (folder / "plugin-security.policy").write_text(f"grant {{\n  {module.policy}\n}};\n")


def _plugin_class(jar: Path, candidates: tuple[str, ...]) -> str:
    with zipfile.ZipFile(jar) as zf:
        names = set(zf.namelist())
    for cls in candidates:
        if cls.replace(".", "/") + ".class" in names:
            return cls
    raise HarnessError(f"{jar.name} has none of the plugin classes {candidates}")


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached_home(name: str, build: Callable[[Path, Path], tuple[Path, dict[str, Any]]], version: str) -> Path:
    """``cache_root()/name``, built once: ``build(staging, java_home)`` returns the built home and what
    its ready marker records; under a lock, in a staging folder renamed into place, so a failed or
    concurrent preparation never leaves a half-built home."""
    root = cache_root()
    home = root / name
    if (home / READY_MARKER).is_file():
        return home
    java_home = find_java(version)
    with _lock(root / f".{name}.lock"):
        if (home / READY_MARKER).is_file():
            return home
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=root))
        try:
            built, marker = build(staging, java_home)
            (built / READY_MARKER).write_text(json.dumps(marker))
            shutil.rmtree(home, ignore_errors=True)
            built.rename(home)
            _make_readable(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home


def _install_plugin(home: Path, plugin_zip: Path, java_home: Path, what: str) -> None:
    _run(
        [str(home / "bin" / "opensearch-plugin"), "install", "--batch", plugin_zip.as_uri()],
        f"installing the {what} plugin",
        env={**os.environ, "JAVA_HOME": str(java_home)},
    )


def prepare(version: str = DEFAULT_VERSION) -> Path:
    """The node home for ``version`` with k-NN installed: fetched and built once, then cached."""

    def build(staging: Path, java_home: Path) -> tuple[Path, dict[str, Any]]:
        artifacts = staging / "artifacts"
        _fetch_artifacts(version, artifacts)
        with zipfile.ZipFile(artifacts / f"opensearch-{version}.zip") as zf:
            zf.extractall(staging)
        built = staging / f"opensearch-{version}"
        for script in (built / "bin").iterdir():
            script.chmod(0o755)
        for module in MODULES:
            _assemble_module(module, artifacts, built, version)
        knn_zip = next(artifacts.glob("opensearch-knn-*.zip"), None)
        if knn_zip is None:
            raise HarnessError(f"Maven failure: no opensearch-knn zip for {version}")
        _install_plugin(built, knn_zip, java_home, "k-NN")
        return built, {"version": version, "knn": knn_zip.name}

    return _cached_home(f"opensearch-{version}-l{HOME_LAYOUT}", build, version)


def _fetch_plugin_zip(name: str, version: str, dest: Path) -> Path:
    """``org.opensearch.plugin:<name>:<version>.0:zip`` from Maven Central into ``dest``."""
    if shutil.which("mvn") is None:
        raise HarnessError("Maven failure: mvn is not on PATH (install it, e.g. apt-get install maven)")
    coords = f"org.opensearch.plugin:{name}:{version}.0:zip"
    _run(
        ["mvn", "-B", "-q", "dependency:copy", f"-Dartifact={coords}", f"-DoutputDirectory={dest}"],
        f"Maven failure while fetching {coords}",
    )
    found = next(dest.glob(f"{name}-*.zip"), None)
    if found is None:
        raise HarnessError(f"Maven failure: {coords} was not fetched")
    return found


def prepare_variant(
    tag: str,
    plugins: Sequence[str],
    configure: Callable[[Path, Path], None] | None = None,
    version: str = DEFAULT_VERSION,
) -> Path:
    """A node home with ``plugins`` (Maven artifact ids, installed in this order) on top of the k-NN
    home, cached under its ``tag`` like the base home. ``configure(home, java_home)`` runs once after
    the installs (e.g. to write certificates); a failed preparation leaves no half-built home.
    """
    base = prepare(version)

    def build(staging: Path, java_home: Path) -> tuple[Path, dict[str, Any]]:
        built = staging / "home"
        shutil.copytree(base, built, symlinks=True)
        (built / READY_MARKER).unlink()
        for name in plugins:
            _install_plugin(built, _fetch_plugin_zip(name, version, staging / "artifacts"), java_home, name)
        if configure is not None:
            configure(built, java_home)
        return built, {"version": version, "plugins": list(plugins)}

    return _cached_home(f"opensearch-{version}-l{HOME_LAYOUT}-{tag}", build, version)


def _make_readable(root: Path) -> None:
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=False)
    for parent in root.parents:  # the node's user must be able to traverse into the cache
        if parent == Path("/"):
            break
        if os.stat(parent).st_uid == os.geteuid():
            parent.chmod(parent.stat().st_mode | 0o011)


# ----------------------------------------------------------------------------- running nodes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ensure_run_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(RUN_USER)
    except KeyError:
        _run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_USER],
            f"creating the system user {RUN_USER} (OpenSearch refuses to run as root)",
        )
        entry = pwd.getpwnam(RUN_USER)
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class NodeAccess:
    """How the harness itself talks to a node: plain HTTP, or HTTPS trusting ``ca_certs`` with basic
    auth (a node with the security plugin)."""

    scheme: str = "http"
    ca_certs: Path | None = None
    auth: tuple[str, str] | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.scheme != "https":
            return None
        return ssl.create_default_context(cafile=str(self.ca_certs) if self.ca_certs else None)


@dataclass
class OpenSearchNode:
    """One OpenSearch JVM: its ports, folder and process. ``url`` is its HTTP(S) endpoint."""

    name: str
    home: Path
    workdir: Path
    http_port: int
    transport_port: int
    process: subprocess.Popen[bytes] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    access: NodeAccess = field(default_factory=NodeAccess)

    @property
    def url(self) -> str:
        return f"{self.access.scheme}://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "console.log"

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _write_config(self, heap: str) -> Path:
        conf = self.workdir / "config"
        shutil.copytree(self.home / "config", conf)
        for sub in ("data", "logs", "tmp"):
            (self.workdir / sub).mkdir(exist_ok=True)
        jvm = (conf / "jvm.options").read_text()
        jvm = re.sub(r"(?m)^-Xm([sx])\S+$", lambda m: f"-Xm{m.group(1)}{heap}", jvm)
        jvm = jvm.replace("=logs/", f"={self.workdir}/logs/").replace(
            "file=logs/", f"file={self.workdir}/logs/"
        )
        jvm = jvm.replace("HeapDumpPath=data", f"HeapDumpPath={self.workdir}/data")
        (conf / "jvm.options").write_text(jvm)
        settings = {
            "cluster.name": "gemsearch-test",
            "node.name": self.name,
            "network.host": "127.0.0.1",
            "http.port": self.http_port,
            "transport.port": self.transport_port,
            "path.data": str(self.workdir / "data"),
            "path.logs": str(self.workdir / "logs"),
            "cluster.routing.allocation.disk.threshold_enabled": False,
            **self.settings,
        }
        (conf / "opensearch.yml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
        return conf

    def start(self, java_home: Path, heap: str = DEFAULT_HEAP) -> None:
        conf = self._write_config(heap)
        env = {
            **os.environ,
            "JAVA_HOME": str(java_home),
            "OPENSEARCH_PATH_CONF": str(conf),
            "OPENSEARCH_TMPDIR": str(self.workdir / "tmp"),
        }
        env.pop("OPENSEARCH_JAVA_OPTS", None)
        # The JVM dies with us (no orphans), even if the test process is killed.
        cmd = ["setpriv", "--pdeathsig", "SIGKILL"]
        if os.geteuid() == 0:
            uid, gid = _ensure_run_user()
            subprocess.run(["chown", "-R", f"{uid}:{gid}", str(self.workdir)], check=True)
            cmd += [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        cmd.append(str(self.home / "bin" / "opensearch"))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 10,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        """A small JSON HTTP call, so the harness does not depend on the client under test. ``auth``
        (user, password) replaces the node's own credentials."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        user_password = auth or self.access.auth
        if user_password is not None:
            token = base64.b64encode(":".join(user_password).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        context = self.access.ssl_context()
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read() or b"null")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, nodes: int = 1, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(
                    f"OpenSearch node {self.name} exited (code {self.process and self.process.poll()}) "
                    f"before it came up. Its log:\n{self.log_tail()}"
                )
            try:
                health = self.request(
                    "GET", f"/_cluster/health?wait_for_nodes={nodes}&wait_for_status=yellow&timeout=2s"
                )
                if not health.get("timed_out") and health.get("status") in ("green", "yellow"):
                    return
                last_error = f"health: {health}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last_error = str(exc)
                time.sleep(1)
        raise HarnessError(
            f"OpenSearch node {self.name} did not come up within {timeout:.0f}s ({last_error}). "
            f"Its log:\n{self.log_tail()}"
        )

    def signal(self, sig: int) -> None:
        if self.process is not None and self.alive():
            os.killpg(self.process.pid, sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        """Stop the JVM (TERM, then KILL) and remove its folder."""
        if self.process is not None and self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _remove_stale_workdirs() -> None:
    """Folders of nodes whose launching process died without cleaning up (e.g. it was killed)."""
    for workdir in Path(tempfile.gettempdir()).glob("gemsearch-node-*"):
        try:
            owner = int((workdir / "launcher.pid").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(workdir, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _new_node(
    name: str,
    home: Path,
    settings: dict[str, Any],
    transport_port: int | None = None,
    access: NodeAccess | None = None,
) -> OpenSearchNode:
    _remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"gemsearch-{name}-"))
    workdir.chmod(0o755)
    (workdir / "launcher.pid").write_text(str(os.getpid()))
    return OpenSearchNode(
        name=name,
        home=home,
        workdir=workdir,
        http_port=free_port(),
        transport_port=transport_port or free_port(),
        settings=settings,
        access=access or NodeAccess(),
    )


def start_node(
    version: str = DEFAULT_VERSION,
    heap: str = DEFAULT_HEAP,
    home: Path | None = None,
    settings: dict[str, Any] | None = None,
    access: NodeAccess | None = None,
) -> OpenSearchNode:
    """Prepare (if needed) and start a single-node cluster; returns once it is ready. ``home`` is a
    prepared home (default: the k-NN home), ``settings`` extra ``opensearch.yml`` entries, ``access``
    how to reach it (HTTPS and credentials for a node with the security plugin)."""
    home = home or prepare(version)
    java_home = find_java(version)
    node = _new_node("node-0", home, {"discovery.type": "single-node", **(settings or {})}, access=access)
    node.start(java_home, heap)
    try:
        node.wait_ready()
    except BaseException:
        node.stop()
        raise
    return node


def start_cluster(
    size: int = 2, version: str = DEFAULT_VERSION, heap: str = DEFAULT_HEAP
) -> list[OpenSearchNode]:
    """Start ``size`` nodes on loopback that form one cluster; returns once all have joined."""
    home = prepare(version)
    java_home = find_java(version)
    names = [f"node-{i}" for i in range(size)]
    ports = [free_port() for _ in names]
    settings = {
        "discovery.seed_hosts": [f"127.0.0.1:{p}" for p in ports],
        "cluster.initial_cluster_manager_nodes": names,
    }
    nodes = [_new_node(n, home, settings, p) for n, p in zip(names, ports, strict=True)]
    try:
        for node in nodes:
            node.start(java_home, heap)
        for node in nodes:
            node.wait_ready(nodes=size)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch and run the OpenSearch node used by the tests.")
    parser.add_argument("command", choices=["prepare", "start"])
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--heap", default=DEFAULT_HEAP)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            print(prepare(args.version))
            return 0
        nodes = (
            [start_node(args.version, args.heap)]
            if args.nodes == 1
            else start_cluster(args.nodes, args.version, args.heap)
        )
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for node in nodes:
        print(f"{node.name}: {node.url}  (log: {node.log_path})", flush=True)
    print("Ctrl-C stops the node(s).", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for node in nodes:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
