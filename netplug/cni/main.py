"""``netplug``: the CNI plugin executable.

Start-up is paid on every container start, so this module imports only
``posix``, ``sys`` and the socket framing: no ``json`` and no ``socket``
(each would cost as much as the interpreter's own start), not even ``os``
(over a millisecond when the launcher skips ``site``), and no ``from __future__
import annotations`` in the modules on this path (``__future__`` is one more
module to find and load: 0.3 ms). When the host's netplugd
serves this store and host name, the call goes to it and its answer is
printed; an ADD that finds no agent starts one (``autostart``) and hands the
call to it; otherwise (no agent, or it declines) the same handler runs here,
importing the heavy parts only then.
"""

import posix
import sys

from netplug.cni import MAX_STDIN, logfile
from netplug.cni import agent_client as client

USAGE = """\
netplug: CNI plugin for netplug networks (CNI spec 0.1.0-1.1.0).

A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS,
VERSION) and the other CNI_* variables in the environment and the network
configuration as JSON on stdin; the result or the error is JSON on stdout,
logs go to the file named by "logFile" (default /var/log/netplug/netplug.log).
When netplugd runs on the host, calls are handed to it; see README.md.
"""
VERSIONS = "0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
INVALID_ENV, TRY_AGAIN_LATER = 4, 11  # CNI error codes (errors.py is not imported: start-up)
DEFAULT_LOG_FILE = "/var/log/netplug/netplug.log"  # NetConf.log_file (not imported: start-up)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    env = {
        k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
        for k, v in posix.environ.items()
    }
    if not env.get("CNI_COMMAND"):
        # skel's behaviour: with no command, say what this is on stderr.
        sys.stderr.write(f"{USAGE}CNI protocol versions supported: {VERSIONS}\n")
        return 0
    # A byte past the limit is enough for the parser to refuse it (code 6).
    stdin = sys.stdin.buffer.read(MAX_STDIN + 1)
    try:
        reply = client.call(env, stdin)
    except client.AgentError as e:
        reply = _error_reply(env, stdin, TRY_AGAIN_LATER, str(e))
    if reply is None and env["CNI_COMMAND"] == "ADD":  # no agent: start this host's
        reply = _via_started_agent(env, stdin)
    if reply is None or reply[0] is None:  # no agent here, or not ours
        reply = _in_process(env, stdin)
    status, log_file, summary, stdout = reply
    sys.stdout.buffer.write(stdout)
    sys.stdout.flush()
    logfile.append(log_file, summary)
    # Nothing is left to do: skip the interpreter's teardown, about 2 ms of CPU
    # on every container start.
    posix._exit(status)


def _via_started_agent(
    env: dict[str, str], stdin: bytes
) -> tuple[int | None, str, str, bytes] | None:
    """The agent's reply once one was started for this host (autostart.py), or None
    when none serves: the call then runs here."""
    from netplug.cni import autostart

    if not autostart.ensure(env, stdin):
        return None
    try:
        return client.call(env, stdin)
    except client.AgentError as e:
        return _error_reply(env, stdin, TRY_AGAIN_LATER, str(e))


def _in_process(env: dict[str, str], stdin: bytes) -> tuple[int, str, str, bytes]:
    if env["CNI_COMMAND"] == "VERSION":
        return _version(env, stdin)
    from netplug import faults
    from netplug.cni import dispatch
    from netplug.cni.handler import NETPLUG

    try:
        armed = faults.notice()
    except faults.FaultSpecError as e:  # before anything changes, not at the first point
        return _error_reply(env, stdin, INVALID_ENV, str(e))
    reply = dispatch.handle_in_process(NETPLUG, env, stdin)
    if armed:
        logfile.append(reply.log_file, f"WARNING {armed}")
    return reply.exit_code, reply.log_file, reply.summary, reply.stdout


def _version(env: dict[str, str], stdin: bytes) -> tuple[int, str, str, bytes]:
    """VERSION needs neither store nor netlink: only the request parser."""
    import json

    from netplug.cni.errors import CNIError
    from netplug.cni.request import parse_request, version_reply

    try:
        document = version_reply(parse_request(env, stdin).cni_version)
    except CNIError as e:
        return 1, "", "", json.dumps(e.to_json("1.1.0")).encode()
    return 0, "", "", json.dumps(document).encode()


def _error_reply(
    env: dict[str, str], stdin: bytes, code: int, msg: str
) -> tuple[int, str, str, bytes]:
    """The CNI error for a call the agent took and did not answer; logged to the
    config's ``logFile`` like every other call."""
    import json

    try:
        conf = json.loads(stdin)
    except (ValueError, RecursionError):
        conf = None
    conf = conf if isinstance(conf, dict) else {}
    version = conf.get("cniVersion")
    log_file = conf.get("logFile")
    document = json.dumps(
        {"cniVersion": version if isinstance(version, str) else "1.1.0", "code": code, "msg": msg}
    ).encode()
    summary = (
        f"{env['CNI_COMMAND']} container={env.get('CNI_CONTAINERID', '-')} "
        f"ifname={env.get('CNI_IFNAME', '-')} network={conf.get('name', '-')} "
        f"error {code}: {msg}"
    )
    if not (isinstance(log_file, str) and log_file.startswith("/")):
        log_file = DEFAULT_LOG_FILE  # as the config parser would default it
    return 1, log_file, summary, document


if __name__ == "__main__":
    sys.exit(main())
