"""What the store view carries over a store reset, kept on the host as well.

The carry (``reset_carry``) starts from the view's last read before the reset,
which only the agent's memory held: an agent restarted while the hosts
recovered (a crash, an upgrade, systemd) carried nothing, and its host lost
its peers, names and policy set elements toward every host not recovered yet.
So the view saves the other hosts' records when it first finds the store
reset (``save``), again with the time the carry began (its grace counts from
then, also across restarts) and whenever a host leaves the carry, and removes
the file when the carry ends. One file per store URL, beside the host's
memory of that store's identity: ``<runDir>/<host>/reset-carry-<hash>.json``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from netplug.ipam.identity import HostMemory
from netplug.ipam.store.base import KeyValue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Kept:
    records: dict[str, KeyValue]  # the other hosts' records, by key
    since: float | None  # when the carry began (wall clock); None: not yet
    saved: float  # when this was saved (wall clock)


class CarryFile:
    def __init__(self, memory: HostMemory) -> None:
        self.path = memory.beside("reset-carry")

    def save(self, records: Mapping[str, KeyValue], since: float | None = None) -> None:
        """Keep ``records`` (whole: a reader never sees half); a failure is logged,
        the carry then lives in memory only."""
        rows = [_row(kv) for kv in records.values()]
        tmp = self.path.with_name(f".{self.path.name}.{threading.get_native_id()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"since": since, "saved": time.time(), "records": rows}))
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning(
                "cannot keep the records carried over the store reset in %s: %s "
                "(an agent restarted meanwhile will not carry them)",
                self.path,
                e,
            )

    def load(self) -> Kept | None:
        """What was saved; None when nothing was (or it does not read: logged, removed)."""
        try:
            saved = json.loads(self.path.read_bytes())
            records = {kv.key: kv for kv in map(_record, saved["records"])}
            since = saved["since"]
            return Kept(records, None if since is None else float(since), float(saved["saved"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring the unreadable carry of a store reset %s: %s", self.path, e)
            self.remove()
            return None

    def remove(self) -> None:
        """Remove what was saved (a failure is logged: a later start drops it, past
        its grace)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the carry of a store reset %s: %s", self.path, e)


def _row(kv: KeyValue) -> list:
    value = base64.b64encode(kv.value).decode()
    return [kv.key, value, kv.create_revision, kv.mod_revision, kv.version]


def _record(row: list) -> KeyValue:
    key, value, create, mod, version = row
    return KeyValue(str(key), base64.b64decode(value), int(create), int(mod), int(version))
