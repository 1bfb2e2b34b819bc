"""Real CNI clients for integration tests: podman 4.3 (CNI backend) and cbcni (libcni 1.1.2).

Rules (DESIGN.md, "Safety on these machines"): every runtime runs in a network namespace that
a test made here (named ``npt-*``); all state lives in a temp dir; every command has a
timeout; every namespace, mount, process and file is removed in ``finally``. RUNTIMES.md
explains the podman set-up (private mount namespace, cgroups, ulimits) and its pitfalls.

Helpers, not tests: ``make_netns``, ``netns_exec``, ``cbcni_binary``, ``Cbcni``, ``Podman``,
``busybox_image``, ``logging_plugin`` / ``plugin_calls``, ``require_root``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NETNS_PREFIX = "npt-"
NETNS_DIR = Path("/run/netns")
REFERENCE_PLUGIN_DIR = Path("/usr/lib/cni")
CACHE_DIR = Path(os.environ.get("NETPLUG_TEST_CACHE", "/tmp/netplug-test-cache"))
TOOLS_DIR = Path(os.environ.get("NETPLUG_TOOLS_DIR", "/work/shared/tools"))
BUSYBOX = Path("/bin/busybox")
BUSYBOX_IMAGE = "localhost/npt-busybox:latest"
LIBCNI_SRC = Path("/usr/share/gocode/src/github.com/containernetworking/cni/libcni")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT = 30.0


class HarnessError(RuntimeError):
    """A harness command failed; the message carries the command, status and output."""


def require_root() -> None:
    """Skip unless root with `ip` and `nsenter`; under ``CI=true`` fail instead of skipping."""
    missing = [c for c in ("ip", "nsenter", "unshare") if shutil.which(c) is None]
    if os.geteuid() != 0:
        _unavailable("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for network namespaces")
    if missing:
        _unavailable(f"needs {', '.join(missing)} (apt-get install -y iproute2 util-linux)")


def require_commands(*names: str, packages: str = "") -> None:
    """Skip (fail on CI) unless every command in `names` is on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        _unavailable(
            f"needs {', '.join(missing)}"
            + (f" (apt-get install -y {packages})" if packages else "")
        )


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = TIMEOUT,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` with a deadline; with `check`, raise HarnessError showing stdout and stderr."""
    argv = [str(a) for a in cmd]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            input=input,
        )
    except subprocess.TimeoutExpired as e:
        raise HarnessError(
            f"timed out after {timeout}s: {' '.join(argv)}\n"
            f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}"
        ) from e
    if check and proc.returncode != 0:
        raise HarnessError(
            f"exit {proc.returncode}: {' '.join(argv)}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


# --- network namespaces -------------------------------------------------------------------


@contextlib.contextmanager
def make_netns(prefix: str = NETNS_PREFIX) -> Iterator[str]:
    """Create netns ``<prefix><8 hex>`` with ``lo`` up; yield its name; always delete it."""
    if not prefix.startswith(NETNS_PREFIX):
        raise ValueError(f"test namespaces must start with {NETNS_PREFIX!r}")
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        run(["ip", "netns", "del", name], check=False)


def netns_path(netns: str | os.PathLike[str]) -> Path:
    """A netns name (``npt-1234abcd``) or path to the path a CNI runtime wants."""
    text = os.fspath(netns)
    return Path(text) if "/" in text else NETNS_DIR / text


def netns_exec(
    netns: str,
    *cmd: str,
    timeout: float = TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in `netns` (``ip netns exec``: fresh /sys of that netns, no cgroups)."""
    return run(["ip", "netns", "exec", netns, *cmd], timeout=timeout, check=check)


def write_conflist(conf_dir: Path, conflist: Mapping[str, Any]) -> Path:
    """Write `conflist` as ``<conf_dir>/<name>.conflist`` and return the path."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / f"{conflist['name']}.conflist"
    path.write_text(json.dumps(conflist, indent=2))
    return path


# --- cbcni: libcni as containerd / CRI-O / podman use it ----------------------------------


def cbcni_binary() -> Path:
    """Build cbcni once into CACHE_DIR (again when main.go is newer); return its path.

    Raises HarnessError naming the Debian packages when Go or libcni is missing.
    """
    src = TOOLS_DIR / "cbcni" / "main.go"
    out = CACHE_DIR / "cbcni"
    if out.exists() and (not src.exists() or out.stat().st_mtime >= src.stat().st_mtime):
        return out
    if shutil.which("go") is None or not LIBCNI_SRC.is_dir():
        raise HarnessError(
            "building cbcni needs Go and libcni: "
            "apt-get install -y golang-go golang-github-appc-cni-dev"
        )
    if not src.exists():
        raise HarnessError(f"cbcni source not found: {src} (set NETPLUG_TOOLS_DIR)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"cbcni.{os.getpid()}.tmp")  # parallel workers: build apart, rename
    try:
        run(["sh", str(TOOLS_DIR / "build-cbcni.sh"), str(tmp)], timeout=300)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


@dataclass
class Cbcni:
    """Run ``cbcni add|check|del NET NETNS`` with its own conf dir, CNI_PATH and cache dir.

    `host_netns` is the namespace cbcni (and so every plugin) runs in; None means the
    caller's own namespace, which a test must never be in: always pass one.
    """

    conf_dir: Path
    plugin_dirs: Sequence[Path]
    cache_dir: Path
    host_netns: str | None = None
    ifname: str = "eth0"
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = TIMEOUT

    def write_network(self, conflist: Mapping[str, Any]) -> Path:
        return write_conflist(self.conf_dir, conflist)

    def run(
        self,
        command: str,
        network: str,
        netns: str | os.PathLike[str],
        *,
        container_id: str | None = None,
        args: Mapping[str, str] | None = None,
        cap_args: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """One cbcni call; `args` become CNI_ARGS, `cap_args` runtimeConfig (CAP_ARGS)."""
        env = {
            "PATH": CLEAN_PATH,
            "NETCONFPATH": str(self.conf_dir),
            "CNI_PATH": os.pathsep.join(str(d) for d in self.plugin_dirs),
            "CNI_CACHEDIR": str(self.cache_dir),
            "CNI_IFNAME": self.ifname,
            **self.env,
        }
        if container_id:
            env["CNI_CONTAINERID"] = container_id
        if args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in args.items())
        if cap_args:
            env["CAP_ARGS"] = json.dumps(cap_args)
        cmd = [str(cbcni_binary()), command, network, str(netns_path(netns))]
        if self.host_netns:
            cmd = ["ip", "netns", "exec", self.host_netns, *cmd]
        return run(cmd, env=env, timeout=self.timeout, check=check)

    def add(self, network: str, netns: str | os.PathLike[str], **kw: Any) -> dict[str, Any]:
        """ADD through the whole chain; return the parsed CNI result."""
        return json.loads(self.run("add", network, netns, **kw).stdout)

    def check(self, network: str, netns: str | os.PathLike[str], **kw: Any) -> None:
        self.run("check", network, netns, **kw)

    def delete(self, network: str, netns: str | os.PathLike[str], **kw: Any) -> None:
        self.run("del", network, netns, **kw)


# --- podman -------------------------------------------------------------------------------

# Runs once, via `unshare --mount=FILE`, in the host netns: the persistent mount namespace
# every podman call of one Podman enters. `ip netns exec` would make a fresh mount namespace
# per call (so the netns podman bind-mounts in one call is gone in the next) and drops
# /sys/fs/cgroup (crun: "invalid file system type on '/sys/fs/cgroup'").
_MOUNT_NS_SETUP = r"""
set -eu
d=$1
mkdir -p "$d/.cgroup" "$d/run" "$d/var-lib"
mount --rbind /sys/fs/cgroup "$d/.cgroup"
# crun refuses a v1+v2 hybrid ("cgroups in hybrid mode not supported"): keep the v1 part.
if mountpoint -q "$d/.cgroup/unified"; then umount "$d/.cgroup/unified"; fi
mount -t sysfs npt-sysfs /sys                   # /sys/class/net of the host netns
mount --move "$d/.cgroup" /sys/fs/cgroup
mount -t tmpfs -o mode=1777 npt-shm /dev/shm    # podman's lock table /dev/shm/libpod_lock
mount --bind "$d/run" /run                      # /run/netns/netns-*, /run/crun, /run/libpod
mount --bind "$d/var-lib" /var/lib              # libcni cache /var/lib/cni, blob-info cache
"""


class Podman:
    """Rootful podman 4.3.1, CNI backend, inside `host_netns`, all state under one temp dir.

    Use as a context manager. Every call enters the host netns and a private mount namespace
    in which /run, /var/lib and /dev/shm are the temp dir's, so container netns files
    (/run/netns/netns-*), the libcni cache (/var/lib/cni/results) and the lock table stay in
    it. `plugin_dirs` is the CNI plugin search path (put netplug's first); the test writes
    its conflists with `write_network`. Containers run without cgroups and with
    ulimits no higher than ours (see RUNTIMES.md).
    """

    def __init__(
        self,
        host_netns: str,
        plugin_dirs: Sequence[Path] = (REFERENCE_PLUGIN_DIR,),
        *,
        env: Mapping[str, str] | None = None,
        storage_driver: str = "vfs",
        timeout: float = TIMEOUT,
    ) -> None:
        self.host_netns = host_netns
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self.extra_env = dict(env or {})
        self.storage_driver = storage_driver
        self.timeout = timeout
        self.dir = Path()
        self._mnt: tuple[int, int] | None = None  # (st_dev, st_ino) of our mount namespace
        self._procs: set[tuple[int, int]] = set()  # (pid, start time) of conmon + container

    # paths inside the temp dir
    @property
    def network_dir(self) -> Path:
        return self.dir / "net.d"

    @property
    def cni_cache_dir(self) -> Path:
        """libcni's cache (/var/lib/cni in podman's mount namespace): results/, ..."""
        return self.dir / "var-lib" / "cni"

    def __enter__(self) -> Podman:
        require_commands("podman", "conmon", "crun", packages="podman crun conmon")
        self.dir = Path(tempfile.mkdtemp(prefix="npt-podman-"))
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        d = self.dir
        for sub in ("net.d", "storage", "runroot", "tmp", "home"):
            (d / sub).mkdir()
        (d / "containers.conf").write_text(self._containers_conf())
        (d / "storage.conf").write_text(
            f'[storage]\ndriver = "{self.storage_driver}"\n'
            f'graphroot = "{d}/storage"\nrunroot = "{d}/runroot"\n'
        )
        (d / "registries.conf").write_text("unqualified-search-registries = []\n")
        # `unshare --mount=FILE` needs FILE on a mount that is not shared: bind d onto itself.
        mount_env = {"PATH": CLEAN_PATH, "LIBMOUNT_UTAB": str(d / "utab")}
        run(["mount", "--bind", d, d], env=mount_env)
        run(["mount", "--make-private", d], env=mount_env)
        (d / "mnt").touch()
        run(
            [
                "nsenter",
                f"--net={netns_path(self.host_netns)}",
                "unshare",
                f"--mount={d / 'mnt'}",
                "--propagation",
                "private",
                "sh",
                "-c",
                _MOUNT_NS_SETUP,
                "npt-mount-setup",
                d,
            ],
            env=mount_env,
        )
        st = os.stat(d / "mnt")
        self._mnt = (st.st_dev, st.st_ino)

    def _containers_conf(self) -> str:
        d = self.dir
        # No CAP_SYS_RESOURCE here: crun may not raise a limit above its hard limit, and
        # podman's defaults (nofile 1048576) exceed it ("setrlimit RLIMIT_NOFILE: EPERM").
        nofile = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
        plugin_dirs = ", ".join(json.dumps(str(p)) for p in self.plugin_dirs)
        return f"""\
[containers]
cgroups = "disabled"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
image_copy_tmp_dir = "{d}/tmp"
runtime = "crun"
static_dir = "{d}/storage/libpod"
tmp_dir = "{d}/tmp/libpod"
volume_path = "{d}/storage/volumes"

[network]
network_backend = "cni"
cni_plugin_dirs = [{plugin_dirs}]
network_config_dir = "{d}/net.d"
"""

    def env(self) -> dict[str, str]:
        """Podman's whole environment, which it hands on to every CNI plugin."""
        d = self.dir
        return {
            "PATH": CLEAN_PATH,
            "HOME": str(d / "home"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(d / "tmp"),
            "CONTAINERS_CONF": str(d / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(d / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(d / "registries.conf"),
            **self.extra_env,
        }

    def podman(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS`` in the host netns and our mount namespace."""
        if self._mnt is None:
            raise HarnessError("Podman used outside its `with` block")
        d = self.dir
        cmd = [
            "nsenter",
            f"--mount={d / 'mnt'}",
            f"--net={netns_path(self.host_netns)}",
            "podman",
            "--root",
            f"{d}/storage",
            "--runroot",
            f"{d}/runroot",
            "--tmpdir",
            f"{d}/tmp/libpod",
            "--storage-driver",
            self.storage_driver,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--network-config-dir",
            f"{d}/net.d",
            *args,
        ]
        return run(cmd, env=self.env(), timeout=timeout or self.timeout, check=check)

    def write_network(self, conflist: Mapping[str, Any]) -> Path:
        return write_conflist(self.network_dir, conflist)

    def run(
        self,
        name: str,
        network: str,
        *cmd: str,
        detach: bool = True,
        aliases: Sequence[str] = (),
        image: str | None = None,
        options: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``podman run`` on `network` (default image: busybox, default cmd: ``sleep 600``)."""
        image = image or busybox_image(self)
        args = [
            "run",
            "--pull",
            "never",
            "--name",
            name,
            "--network",
            network,
            *(f"--network-alias={a}" for a in aliases),
            *(["-d"] if detach else []),
            *options,
            image,
            *(cmd or ("sleep", "600")),
        ]
        try:
            return self.podman(*args, check=check)
        finally:
            if detach:
                self._remember(name)

    def exec(
        self,
        name: str,
        *cmd: str,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self.podman("exec", name, *cmd, check=check, timeout=timeout)

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self.podman("container", "inspect", name).stdout)[0]

    def ip(self, name: str, network: str) -> str:
        """The container's IPv4 address on `network`."""
        return self.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"]

    def rm_all(self) -> None:
        """Remove every container now (CNI DEL runs for each)."""
        self.podman("rm", "--all", "--force", "--time", "0", timeout=60)

    def close(self) -> None:
        """Remove containers, kill what is left of ours, unmount, delete the temp dir."""
        if self._mnt is not None:
            with contextlib.suppress(HarnessError):
                self.rm_all()
            _kill(self._procs | _procs_in_mount_ns(self._mnt))
        if self.dir != Path():
            env = {"PATH": CLEAN_PATH, "LIBMOUNT_UTAB": str(self.dir / "utab")}
            # The namespace dies with its last process and this bind; its mounts (netns
            # files, sysfs, shm) go with it.
            run(["umount", "-l", self.dir / "mnt"], env=env, check=False)
            run(["umount", "-l", self.dir], env=env, check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
        self._mnt = None

    def _remember(self, name: str) -> None:
        with contextlib.suppress(HarnessError, KeyError, IndexError, ValueError):
            state = self.inspect(name)["State"]
            for pid in (state.get("ConmonPid", 0), state.get("Pid", 0)):
                if pid and (start := _start_time(pid)) is not None:
                    self._procs.add((pid, start))


def _start_time(pid: int) -> int | None:
    """Start time of a live `pid` (clock ticks after boot); None when gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else int(fields[19])  # state, starttime (fields 3, 22)


def _procs_in_mount_ns(mnt: tuple[int, int]) -> set[tuple[int, int]]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                st = os.stat(entry / "ns" / "mnt")
                start = _start_time(int(entry.name))
                if (st.st_dev, st.st_ino) == mnt and start is not None:
                    found.add((int(entry.name), start))
    return found


def _kill(procs: set[tuple[int, int]], grace: float = 5.0, timeout: float = 5.0) -> None:
    """Let each (pid, start time) exit within `grace` (conmon runs its exit command after
    `podman rm`), then SIGKILL those still alive as that same process and wait `timeout`."""
    alive = _wait_gone(procs, grace)
    for pid, _ in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(alive, timeout)


def _wait_gone(procs: set[tuple[int, int]], timeout: float) -> set[tuple[int, int]]:
    deadline = time.monotonic() + timeout
    while (
        alive := {p for p in procs if _start_time(p[0]) == p[1]}
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


# --- a local busybox image ----------------------------------------------------------------


def busybox_tarball() -> bytes:
    """A root filesystem: Debian's static /bin/busybox plus a /bin symlink per applet."""
    if not BUSYBOX.exists():
        raise HarnessError("no /bin/busybox: apt-get install -y busybox-static")
    applets = run([str(BUSYBOX), "--list"]).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "dev", "etc", "proc", "root", "run", "sys", "tmp", "var"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        for path, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def busybox_image(podman: Podman) -> str:
    """Import the busybox root filesystem into `podman`'s storage once; return its name."""
    if podman.podman("image", "exists", BUSYBOX_IMAGE, check=False).returncode != 0:
        tar = podman.dir / "tmp" / "busybox.tar"
        tar.write_bytes(busybox_tarball())
        podman.podman("import", str(tar), BUSYBOX_IMAGE)
        tar.unlink()
    return BUSYBOX_IMAGE


# --- a logging wrapper plugin -------------------------------------------------------------


def logging_plugin(bin_dir: Path, plugin: str, log_dir: Path, target: Path | None = None) -> Path:
    """Write ``bin_dir/plugin``: logs each call's env and stdin to `log_dir`, then execs
    `target` (default: the reference plugin of that name) with the same stdin.

    Put `bin_dir` first in the runtime's plugin dirs; read the calls with `plugin_calls`.
    """
    target = target or REFERENCE_PLUGIN_DIR / plugin
    bin_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / plugin
    wrapper.write_text(f"""#!/bin/sh
f="{log_dir}/$(date +%s%N)-$$-$CNI_COMMAND"
env > "$f.env"
cat > "$f.stdin"
exec "{target}" < "$f.stdin"
""")
    wrapper.chmod(0o755)
    return wrapper


def plugin_calls(log_dir: Path) -> list[dict[str, Any]]:
    """The calls a `logging_plugin` saw, oldest first: ``{"env": {...}, "stdin": {...}}``."""
    calls = []
    for env_file in sorted(log_dir.glob("*.env"), key=lambda p: int(p.name.split("-")[0])):
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        stdin = env_file.with_suffix(".stdin").read_text()
        calls.append({"env": env, "stdin": json.loads(stdin) if stdin.strip() else None})
    return calls
