"""Start this host's netplugd when an ADD finds none, as netavark starts aardvark-dns.

Only ADD starts an agent (DEL, CHECK, GC and STATUS run in-process as before:
a host being torn down must not grow a daemon). The agent serves the config's
``store`` and ``hostName``, remembers its store under ``runDir`` and answers
DNS for ``dns.domain``; it runs detached in a session of its own (its output
in ``RUNDIR/HOST/netplugd.log``), so it outlives the plugin. Where systemd is
the init system it is started through ``systemd-run --scope``: a scope of its
own, out of the runtime's cgroup, which the runtime's service stop or a
container's scope teardown would otherwise kill with it. Where that start
exits non-zero before the agent serves (systemd-run present but refused: no
D-Bus, no permission for a transient unit), the agent is started again
plainly, within the same SERVE_WAIT: a scope is worth having, not worth
giving up the agent for.

Exactly one agent per host however many first ADDs run at once: the one that
holds ``RUNDIR/HOST/netplugd.lock`` starts it and waits until it serves (its
PID file names it); the others wait for the lock, then find it serving. The
agent itself refuses to run beside another one (the socket and the host's
lease). An agent that cannot start never fails the ADD: the call runs
in-process, the plugin's log says why, and for ``BACKOFF`` seconds no ADD
tries again (a burst of calls would otherwise each wait for a failing start).

Off with ``"agent": {"autostart": false}`` in the network config, for hosts
whose agent runs as the systemd unit (which also finds it first: a running
agent is always used).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

from netplug import faults
from netplug.cni import agent_client as client
from netplug.cni import logfile
from netplug.cni.errors import CNIError
from netplug.cni.netconf import NetConf
from netplug.cni.request import parse_request

SERVE_WAIT = 5.0  # for the started agent to serve; then the call runs in-process
PROBE_TIMEOUT = 2.0
# A waiter outlasts the lock holder's whole start: its probe, the wait, the spawn.
LOCK_WAIT = PROBE_TIMEOUT + SERVE_WAIT + 1.0
BACKOFF = 10.0  # after a failed start, ADDs run in-process without trying again
POLL = 0.01
NICE = -10  # as systemd/netplugd.service runs it (the unit says why)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEMD_BOOTED = "/run/systemd/system"  # sd_booted(3): systemd is the init system


@dataclass(frozen=True)
class AgentFiles:
    """Where a started agent keeps its traces: ``<runDir>/<hostName>/netplugd.*``."""

    pid: str
    log: str
    lock: str
    failed: str

    @classmethod
    def of(cls, conf: NetConf) -> AgentFiles:
        base = os.path.join(conf.run_dir, conf.host_name, "netplugd.")
        return cls(*(base + ext for ext in ("pid", "log", "lock", "failed")))

    @property
    def dir(self) -> str:
        return os.path.dirname(self.pid)


def agent_argv(conf: NetConf, files: AgentFiles, python: str, systemd_run: str | None) -> list[str]:
    """The command that starts the agent for ``conf``'s host: the plugin's own
    interpreter (``-I``: as isolated as the launchers), under ``systemd_run``
    when given."""
    argv = [
        *((systemd_run, "--scope", "--quiet", "--collect") if systemd_run else ()),
        *(python, "-I", "-m", "netplug.agent.daemon"),
        *("--store", conf.store, "--host-name", conf.host_name, "--run-dir", conf.run_dir),
        *("--domain", conf.domain, "--pid-file", files.pid),
    ]
    if conf.vxlan.device:
        argv += ["--underlay-device", conf.vxlan.device]
    return argv


def agent_env(env: Mapping[str, str]) -> dict[str, str]:
    """The plugin's environment without the call's CNI_* variables (NETPLUG_FAULTS
    and NETPLUG_HOSTNAME stay), with a PATH (runtimes may pass none)."""
    kept = {k: v for k, v in env.items() if not k.startswith("CNI_")}
    kept.setdefault("PATH", DEFAULT_PATH)
    return kept


def ensure(env: Mapping[str, str], stdin: bytes) -> bool:
    """Whether an agent serves this host now, started here if needed; False (the
    call runs in-process) when the config turns autostart off, does not parse
    (in-process reports it), or the agent could not start (logged)."""
    try:
        faults.notice()
        conf = parse_request(env, stdin).conf
    except (CNIError, faults.FaultSpecError):
        return False
    if conf is None or not conf.autostart_agent:
        return False
    files = AgentFiles.of(conf)
    try:
        os.makedirs(files.dir, exist_ok=True)
        lock = os.open(files.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        return _gave_up(conf, f"cannot use {files.dir}: {e.strerror}")
    try:
        if not _locked(lock, LOCK_WAIT):
            return _gave_up(conf, f"{files.lock} stayed locked for {LOCK_WAIT:g} s")
        return _serving_or_started(conf, files)
    finally:
        os.close(lock)  # releases the lock


def _serving_or_started(conf: NetConf, files: AgentFiles) -> bool:
    """Under the lock: an agent that another ADD started, or one started now."""
    try:
        if client.query(client.HEALTH, timeout=PROBE_TIMEOUT) is not None:
            return True
    except client.AgentError:
        return True  # one listens; the call itself meets what is wrong with it
    if (failure := _recent_failure(files)) is not None:
        return _gave_up(conf, f"it failed to start {failure}")
    try:
        proc, why = _start(conf, files)
    except OSError as e:
        return _failed(conf, files, f"cannot run it: {e}")
    if why:
        return _failed(conf, files, f"{why} (pid {proc.pid}; see {files.log})")
    logfile.append(
        conf.log_file,
        f"started netplugd (pid {proc.pid}) for host {conf.host_name} on store "
        f"{conf.store}: it serves this host's calls from now on; its log is {files.log}",
    )
    return True


def _locked(fd: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)


def _start(conf: NetConf, files: AgentFiles) -> tuple[subprocess.Popen, str]:
    """The agent started, under systemd-run where systemd is init, and why it does
    not serve (empty: it does). Raises OSError when it cannot be run at all."""
    deadline = time.monotonic() + SERVE_WAIT
    systemd_run = shutil.which("systemd-run") if os.path.isdir(SYSTEMD_BOOTED) else None
    proc = _spawn(agent_argv(conf, files, sys.executable, systemd_run), files)
    why = _wait_serving(proc, files.pid, deadline)
    if not (why and systemd_run and proc.returncode):
        return proc, why
    # Exited before serving: systemd-run refused the scope (or the agent failed,
    # which the plain start then shows again).
    logfile.append(conf.log_file, f"netplugd under systemd-run: {why}; starting it without")
    proc = _spawn(agent_argv(conf, files, sys.executable, None), files)
    return proc, _wait_serving(proc, files.pid, deadline)


def _spawn(argv: list[str], files: AgentFiles) -> subprocess.Popen:
    """``argv``, detached: its own session, stdin from /dev/null, its output in
    the agent's log; not waited for (it outlives this process)."""
    out = os.open(files.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            # Not the runtime's working directory: a long-lived agent there keeps
            # its filesystem busy (`umount` refused until the agent restarts).
            cwd="/",
            env=agent_env(os.environ),
        )
    finally:
        os.close(out)
    with contextlib.suppress(OSError):  # else it serves at nice 0: slower in bursts only
        os.setpriority(os.PRIO_PROCESS, proc.pid, NICE)
    return proc


def _wait_serving(proc: subprocess.Popen, pid_file: str, deadline: float) -> str:
    """Empty once the agent wrote its PID (it listens then), else why not, by
    ``deadline`` (monotonic seconds)."""
    while time.monotonic() < deadline:
        if _read_pid(pid_file) == proc.pid:
            return ""
        if proc.poll() is not None:
            return f"it exited with status {proc.returncode}"
        time.sleep(POLL)
    return f"it did not serve within {SERVE_WAIT:g} s and was left running"


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


def _recent_failure(files: AgentFiles) -> str | None:
    """What the last failed start said, if it was less than BACKOFF seconds ago."""
    try:
        if time.time() - os.stat(files.failed).st_mtime > BACKOFF:
            return None
        with open(files.failed) as f:
            return f"{BACKOFF:g} s ago or less: {f.read().strip()}"
    except OSError:
        return None


def _failed(conf: NetConf, files: AgentFiles, why: str) -> bool:
    try:
        with open(files.failed, "w") as f:
            f.write(why + "\n")
    except OSError:
        pass  # the next ADD tries again
    return _gave_up(conf, why)


def _gave_up(conf: NetConf, why: str) -> bool:
    logfile.append(
        conf.log_file,
        f"WARNING netplugd could not be started for host {conf.host_name} ({why}): "
        'this call runs in the plugin; set "agent": {"autostart": false} if the host '
        "runs netplugd some other way",
    )
    return False
