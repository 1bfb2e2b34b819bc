"""``netplug``: the CNI plugin executable.

Start-up is paid on every container start, so this module imports only the
standard library. When the host's netplugd serves this store and host name,
the call goes to it over its socket; otherwise (or when it declines) the same
handler runs here, importing the heavy parts only then.
"""

from __future__ import annotations

import json
import os
import sys

from netplug.agent import client
from netplug.cni import logfile

USAGE = """\
netplug: CNI plugin for netplug networks (CNI spec 0.1.0-1.1.0).

A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS,
VERSION) and the other CNI_* variables in the environment and the network
configuration as JSON on stdin; the result or the error is JSON on stdout,
logs go to the file named by "logFile" (default /var/log/netplug/netplug.log).
When netplugd runs on the host, calls are handed to it; see README.md.
"""


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    env = os.environ
    if not env.get("CNI_COMMAND"):
        # skel's behaviour: with no command, say what this is on stderr.
        sys.stderr.write(
            USAGE + "CNI protocol versions supported: "
            "0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
        )
        return 0
    stdin = sys.stdin.buffer.read()
    reply = _version(env, stdin) if env["CNI_COMMAND"] == "VERSION" else _via_agent(env, stdin)
    if reply is None:
        from netplug.cni.handler import handle_in_process

        reply = handle_in_process(env, stdin).to_wire()
    sys.stdout.write(reply["stdout"])
    sys.stdout.flush()
    logfile.append(reply.get("logFile", ""), reply.get("summary", ""))
    return reply["exit"]


def _version(env, stdin: bytes) -> dict:
    """VERSION needs neither store nor agent: answer it here."""
    from netplug.cni.errors import CNIError
    from netplug.cni.request import parse_request, version_reply

    try:
        req = parse_request(env, stdin)
    except CNIError as e:
        return _error(env, stdin, e.code, e.msg)
    return {"stdout": json.dumps(version_reply(req.cni_version)), "exit": 0}


def _via_agent(env, stdin: bytes) -> dict | None:
    try:
        reply = client.call(env, stdin)
    except client.AgentTimeout as e:
        return _error(env, stdin, 11, str(e))
    if reply is None or reply.get("declined"):
        return None
    return reply


def _error(env, stdin: bytes, code: int, msg: str) -> dict:
    try:
        version = json.loads(stdin).get("cniVersion", "1.1.0")
    except (ValueError, AttributeError):
        version = "1.1.0"
    document = {"cniVersion": version, "code": code, "msg": msg}
    return {
        "stdout": json.dumps(document),
        "exit": 1,
        "summary": f"{env.get('CNI_COMMAND')} container={env.get('CNI_CONTAINERID', '-')} "
        f"error {code}: {msg}",
    }


if __name__ == "__main__":
    sys.exit(main())
