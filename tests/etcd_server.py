"""A real etcd (Debian's ``etcd-server``, ``/usr/bin/etcd``) for tests, on loopback.

    etcd = start_etcd(tmp_path)        # a one-member cluster; its log in tmp_path, data in /dev/shm
    store = open_store(etcd.url)       # etcd://127.0.0.1:PORT
    etcd.stop(); etcd.start()          # an outage: same ports, same data
    etcd.stop()                        # always, in a finally

    cluster = start_etcd_cluster(tmp_path)  # three members on 127.0.0.1, distinct ports
    cluster.url                        # etcd://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C
    i = cluster.leader(); cluster.members[i].stop(kill=True); cluster.members[i].start()
    cluster.members[j].pause(); ...; cluster.members[j].resume()   # SIGSTOP / SIGCONT
    cluster.stop()

Only the process started here is ever signalled (by its PID, through Popen).
Outside CI a missing binary skips the test (``apt-get install etcd-server``);
on CI (``CI=true``) it fails it.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import processes

ETCD = "/usr/bin/etcd"
START_TIMEOUT = 15.0  # seconds until the member must answer /health
PORT_FLOOR, PORT_TRIES = 20000, 50  # etcd's ports come from [PORT_FLOOR, ephemeral range)
HEARTBEAT_MS, ELECTION_MS = 50, 500  # a cluster's raft timers, as netns-lab's
MEMORY_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # None: the default temp dir


def missing(message: str) -> NoReturn:
    """Skip the test for want of a tool; on CI (``CI=true``) fail it instead."""
    import pytest  # here: benchmarks use this module without pytest

    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def etcd_binary() -> str:
    """The etcd binary; skips the test (fails it on CI) when it is missing."""
    found = ETCD if os.access(ETCD, os.X_OK) else shutil.which("etcd")
    if not found:
        missing("etcd is not installed: apt-get install etcd-server (or run scripts/setup --test)")
    return found


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (PR_SET_PDEATHSIG),
    so that a crashed test run leaves no etcd behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port(host: str) -> int:
    """A port free now, drawn below the kernel's ephemeral range: no bind(0) or
    outgoing connection elsewhere on the machine takes it before etcd binds it,
    nor while a test keeps etcd stopped to restart it on the same port."""
    low = _ephemeral_low()
    for _ in range(PORT_TRIES if low > PORT_FLOOR else 0):
        port = random.randrange(PORT_FLOOR, low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: let the kernel pick
        s.bind((host, 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS etcd: a CA, the server's pair, and a client's pair."""

    cacert: Path
    server_cert: Path
    server_key: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> TLSFiles:
    """A throw-away CA and, signed by it, a certificate for ``host`` (an IP address)
    and one for a client, made with the ``openssl`` command (EC keys: fast)."""
    openssl = shutil.which("openssl")
    if not openssl:
        missing("openssl is not installed: apt-get install openssl")
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(
        *(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key"))
    )
    ca_key = directory / "ca.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]

    def run(*args: str | Path) -> None:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=30)

    run("req", "-x509", *ec, "-keyout", ca_key, "-out", files.cacert, "-subj", "/CN=test CA")
    server_ext = f"subjectAltName=IP:{host}\nextendedKeyUsage=serverAuth,clientAuth\n"
    for name, cert, key, ext in (
        ("server", files.server_cert, files.server_key, server_ext),
        ("client", files.cert, files.key, "extendedKeyUsage=clientAuth\n"),
    ):
        csr, extfile = directory / f"{name}.csr", directory / f"{name}.ext"
        extfile.write_text(ext)
        run("req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        signed_by_ca = ("-CA", files.cacert, "-CAkey", ca_key, "-CAcreateserial")
        run("x509", "-req", "-in", csr, *signed_by_ca, "-out", cert, "-extfile", extfile)
    return files


class EtcdProcess:
    """One etcd member on ``host`` with its data in ``data_dir``; ``url`` is the store URL.
    With ``tls``, clients must use TLS and present a certificate of its CA."""

    def __init__(
        self,
        log_path: Path,
        host: str = "127.0.0.1",
        tls: TLSFiles | None = None,
        name: str = "test",
    ) -> None:
        self.binary = etcd_binary()
        # In memory: etcd fsyncs every write, and a shared disk's stalls would
        # turn into the tests' 2 s request timeouts. Removed when this object
        # goes, or at the latest when the test process exits.
        self.data_dir = Path(tempfile.mkdtemp(prefix="npt-etcd-", dir=MEMORY_DIR))
        weakref.finalize(self, shutil.rmtree, self.data_dir, True)
        self.host = host
        self.tls = tls
        self.client_port = free_port(host)
        self.peer_port = free_port(host)
        self.log_path = log_path
        self.name = name
        self.cluster = ""  # --initial-cluster; empty: this member alone
        # Short raft timers: quick elections, and a minimum lease TTL of 1 s.
        self.heartbeat_ms, self.election_ms = 20, 200
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def url(self) -> str:
        if self.tls:
            t = self.tls
            return f"etcds://{self.endpoint}?cacert={t.cacert}&cert={t.cert}&key={t.key}"
        return f"etcd://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (or restart, on the same ports and data) and wait until healthy."""
        self.launch()
        self.wait_healthy(timeout)

    def launch(self) -> None:
        """Start the process (or restart it, on the same ports and data); a member of
        a cluster is healthy only once a quorum runs: ``wait_healthy`` then."""
        if self.proc is not None and self.proc.poll() is None:
            return
        client = f"{'https' if self.tls else 'http'}://{self.endpoint}"
        peer = self.peer_url
        args = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.cluster or f'{self.name}={peer}'}",
            "--initial-cluster-state=new",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            # A member cut off from the others does not disrupt them when it returns.
            "--pre-vote",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]
        if self.tls:
            args += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.cacert}",
                "--client-cert-auth",
            ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the member answers /health (it has a leader); stops it on failure."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd did not start; its log:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill``); a no-op when stopped."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused member would not see SIGTERM
            processes.stop(proc, kill)

    def pause(self) -> None:
        """SIGSTOP: the member holds its connections and answers nothing, to its
        peers (a partition, seen from them) and to clients (a hung server)."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def status(self) -> dict:
        """This member's view: ``member_id`` (in ``header``), ``leader``, ``raftTerm``."""
        return self.request("POST", "/v3/maintenance/status", {})

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/health").get("health") == "true"
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One JSON request to this member's gateway (for tests' own set-up)."""
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls.cacert))
            context.load_cert_chain(self.tls.cert, self.tls.key)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.client_port, timeout=2, context=context
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.client_port, timeout=2)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, payload)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def reset(self) -> None:
        """Delete every key and revoke every lease: a clean key space, revisions go on."""
        everything = base64.b64encode(b"\0").decode()
        self.request("POST", "/v3/kv/deleterange", {"key": everything, "range_end": everything})
        for lease in self.request("POST", "/v3/lease/leases", {}).get("leases", []):
            self.request("POST", "/v3/lease/revoke", {"ID": lease["ID"]})

    def compact(self, revision: int) -> None:
        """Drop the history before ``revision`` (etcd keeps ``revision`` itself)."""
        reply = self.request(
            "POST", "/v3/kv/compaction", {"revision": str(revision), "physical": True}
        )
        if "error" in reply:
            raise RuntimeError(f"compaction to {revision} failed: {reply}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_etcd(tmpdir: Path | str, host: str = "127.0.0.1", tls: bool = False) -> EtcdProcess:
    """A started one-member etcd on ``host`` (loopback) with its data under ``tmpdir``;
    with ``tls``, on https with client certificates (``url`` carries the files)."""
    base = Path(tmpdir)
    base.mkdir(parents=True, exist_ok=True)
    files = make_tls_files(base / "tls", host) if tls else None
    for attempt in range(3):  # a free port can be taken between probing and binding
        etcd = EtcdProcess(base / f"etcd-{attempt}.log", host, files)
        try:
            etcd.start()
            return etcd
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class EtcdCluster:
    """Members of one etcd cluster on loopback, each on ports of its own."""

    def __init__(self, members: list[EtcdProcess]) -> None:
        self.members = members
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
        for member in members:
            member.cluster = cluster
            # netns-lab's timers: three members on two loaded cores need some slack.
            member.heartbeat_ms, member.election_ms = HEARTBEAT_MS, ELECTION_MS

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        for member in self.members:  # all at once: none is healthy before a quorum runs
            member.launch()
        for member in self.members:
            member.wait_healthy(timeout)

    def stop(self) -> None:
        for member in self.members:
            member.stop(kill=True)

    def running(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m.proc is not None]

    def leader(self, timeout: float = START_TIMEOUT) -> int:
        """The index of the member that leads, as a running member says, once one does."""
        deadline = time.monotonic() + timeout
        while True:
            for i in self.running():
                with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                    leader = int(self.members[i].status().get("leader", 0))
                    ids = [self._member_id(j) for j in self.running()]
                    if leader and leader in ids:
                        return self.running()[ids.index(leader)]
            if time.monotonic() > deadline:
                raise RuntimeError("no etcd member leads")
            time.sleep(0.02)

    def _member_id(self, index: int) -> int:
        return int(self.members[index].status()["header"]["member_id"])


def start_etcd_cluster(tmpdir: Path | str, size: int = 3) -> EtcdCluster:
    """A started ``size``-member etcd cluster on 127.0.0.1, its logs under ``tmpdir``."""
    base = Path(tmpdir)
    base.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # a free port can be taken between probing and binding
        members = [EtcdProcess(base / f"etcd{i}-{attempt}.log", name=f"m{i}") for i in range(size)]
        cluster = EtcdCluster(members)
        try:
            cluster.start()
            return cluster
        except RuntimeError:
            cluster.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
