"""``netplugctl policy`` against SQLite and a real etcd: every error class changes nothing."""

from __future__ import annotations

import io
import json

import pytest

from netplug.ctl.main import main
from netplug.ipam import enforcement, networks, policies
from netplug.ipam.schema import (
    Enforcement,
    EnforcementRecord,
    HostRecord,
    Hosts,
    NetworkRecord,
    Policies,
)
from netplug.policy.model import MAX_DOCUMENT
from netplug.policy.report import Counts, HostCounters

HEADERS = ["NAME", "NETWORK", "SELECT", "INGRESS", "EGRESS", "ALLOWED", "DROPPED", "HOSTS"]
GOOD = {"name": "db-in", "network": "blue", "select": {"names": ["db"]}, "ingress": []}


@pytest.fixture
def url(store):
    for name, subnet, vni in (("blue", "10.1.0.0/16", 4242), ("green", "10.2.0.0/16", 4243)):
        networks.ensure_network(store, name, NetworkRecord(subnet, "", vni, "netplug.internal"))
    return store.url


def apply(url, tmp_path, document, *extra: str) -> int:
    path = tmp_path / "policy.json"
    path.write_bytes(document if isinstance(document, bytes) else json.dumps(document).encode())
    return main(["--store", url, "policy", "apply", str(path), *extra])


def test_apply_list_show_delete(url, store, tmp_path, capsys):
    other = {"name": "web-out", "network": "green", "select": {}, "egress": [{}]}
    assert apply(url, tmp_path, [GOOD, other], "--json") == 0
    applied = json.loads(capsys.readouterr().out)
    assert [(r["policy"], r["network"]) for r in applied] == [
        ("db-in", "blue"),
        ("web-out", "green"),
    ]

    assert main(["--store", url, "policy", "list", "--network", "blue", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {
            "name": "db-in",
            "network": "blue",
            "select": "db",
            "ingress": "0 rule(s)",
            "egress": "untouched",
            "allowed": None,  # until an agent reports counters
            "dropped": None,
            "hosts": 0,
        }
    ]
    assert main(["--store", url, "policy", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == HEADERS
    assert table[1].split()[-3:] == ["-", "-", "0"]
    assert len(table) == 3

    assert main(["--store", url, "policy", "show", "web-out", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"policy": other, "allowed": None, "dropped": None, "hosts": 0}

    assert main(["--store", url, "policy", "delete", "db-in"]) == 0
    assert [p.name for p in policies.read(store)] == ["web-out"]
    assert main(["--store", url, "policy", "delete", "db-in"]) == 1
    assert "no policy db-in" in capsys.readouterr().err
    assert main(["--store", url, "policy", "show", "db-in"]) == 1


def test_delete_with_json_prints_json(url, store, tmp_path, capsys):
    """Scripts read --json's stdout: delete printed nothing there, only stderr."""
    assert apply(url, tmp_path, GOOD) == 0
    capsys.readouterr()
    assert main(["--store", url, "policy", "delete", "db-in", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"policy": "db-in", "deleted": True}]


def test_apply_reads_stdin(url, store, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(json.dumps(GOOD).encode())))
    assert main(["--store", url, "policy", "apply", "-"]) == 0
    assert policies.get(store, "db-in") is not None


def test_a_huge_stdin_is_refused_unread(url, store, monkeypatch, capsys):
    huge = io.BytesIO(b" " * (5 * 1024 * 1024))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(huge))
    assert main(["--store", url, "policy", "apply", "-"]) == 1
    assert "policy apply stdin: document: expected at most 1048576 bytes (1 MiB), got more" in (
        capsys.readouterr().err
    )
    assert huge.tell() < 2 * 1024 * 1024  # read no further than the limit (and a buffer)


@pytest.mark.parametrize(
    "document, message",
    [
        (
            b"[" + b" " * (5 * 1024 * 1024) + b"]",
            "document: expected at most 1048576 bytes (1 MiB), got 5242882 bytes",
        ),
        (b"{not json", "document: expected JSON"),
        (
            {**GOOD, "network": "purple"},
            '[1].network: expected a known network (known: blue, green), got "purple"',
        ),
        (
            {**GOOD, "ingress": [{"ports": [{"protocol": "gre"}]}]},
            "[1].ingress[0].ports[0].protocol: expected one of tcp",
        ),
        (
            {**GOOD, "ingress": [{"ports": [{"port": 70000}]}]},
            "[1].ingress[0].ports[0].port: expected a port number",
        ),
        (
            {**GOOD, "ingress": [{"from": [{"cidr": "10.1.2.3/8"}]}]},
            "[1].ingress[0].from[0].cidr: expected a CIDR",
        ),
        (GOOD, '[1].name: expected a name not used before (also [0]), got "db-in"'),
        ({**GOOD, "name": "db*"}, "[1].name: expected a policy name"),
        ({**GOOD, "priority": 1}, "[1].priority: unknown field"),
        ({**GOOD, "select": []}, "[1].select: expected a selector object"),
    ],
)
def test_each_error_class_is_reported_and_nothing_is_stored(
    url, store, tmp_path, capsys, document, message
):
    whole = document if isinstance(document, bytes) else [GOOD, document]
    revision = store.status()
    assert apply(url, tmp_path, whole) == 1
    err = capsys.readouterr().err
    assert f"policy apply {tmp_path / 'policy.json'}: {message}" in err
    assert err.rstrip().endswith("netplugctl: nothing was applied")
    assert store.range(Policies.PREFIX, prefix=True).kvs == []
    assert store.status() == revision


def test_an_unreadable_file_is_an_error(url, tmp_path, capsys):
    assert main(["--store", url, "policy", "apply", str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_global_options_go_before_or_after_the_command_and_policy_alone_lists(url, capsys):
    assert main(["policy", "list", "--store", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--store", url, "policy"]) == 0
    assert capsys.readouterr().out.split() == HEADERS


def test_a_record_that_does_not_read_is_named_not_a_traceback(url, store, capsys):
    store.put(Policies.key("hand"), b'{"name": "hand"}')
    assert main(["--store", url, "policy", "show", "hand"]) == 1
    assert "policy show: policy record: " in capsys.readouterr().err
    assert main(["--store", url, "policy", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # skipped, logged


def test_apply_no_longer_warns_that_policies_are_not_enforced(url, tmp_path, capsys):
    assert apply(url, tmp_path, GOOD) == 0
    assert "warning" not in capsys.readouterr().err  # netplugd enforces them


def near_limit(count: int) -> list[dict]:
    """``count`` policies whose document comes near the 1 MiB a document may take."""
    globs = ["n" * 60] * 129  # about 8 KB a policy
    return [
        {"name": f"p{i:04d}", "network": "blue", "select": {"names": globs}} for i in range(count)
    ]


def test_a_document_of_as_many_policies_as_one_transaction_holds_is_applied(
    url, store, tmp_path, capsys
):
    document = json.dumps(near_limit(policies.MAX_PER_APPLY), separators=(",", ":")).encode()
    assert MAX_DOCUMENT - 5_000 < len(document) <= MAX_DOCUMENT
    assert apply(url, tmp_path, document) == 0
    assert len(policies.read(store)) == policies.MAX_PER_APPLY


def test_a_document_of_more_policies_than_one_transaction_holds_is_refused(
    url, store, tmp_path, capsys
):
    revision = store.status()
    assert apply(url, tmp_path, [{**GOOD, "name": f"p{i}"} for i in range(129)]) == 1
    err = capsys.readouterr().err
    assert "document: expected at most 128 policies (one store transaction" in err
    assert "split the document into several (each is applied whole), got 129" in err
    assert err.rstrip().endswith("netplugctl: nothing was applied")
    assert store.range(Policies.PREFIX, prefix=True).kvs == []
    assert store.status() == revision


def report(store, host: str, revision, counters: dict, error: str = "") -> int:
    """``host`` live (its record under a lease) with its agent's report; the lease."""
    lease = store.grant(30)
    store.put(Hosts.key(host), Hosts.encode(HostRecord()), lease)
    counts = HostCounters({n: Counts(*c) for n, c in counters.items()}, 1)
    enforcement.write(store, host, EnforcementRecord(revision, counts, error), lease)
    return lease


def test_counters_are_summed_over_the_live_hosts_and_a_dead_one_drops_out(
    url, store, tmp_path, capsys
):
    assert apply(url, tmp_path, GOOD) == 0
    capsys.readouterr()
    report(store, "h1", 1, {"db-in": (10, 2)})
    dying = report(store, "h2", 1, {"db-in": (5, 1), "gone-policy": (9, 9)})
    # A report without a live host record (written by hand, or its host removed).
    store.put(Enforcement.key("ghost"), Enforcement.encode(EnforcementRecord(1, HostCounters())))

    def listed() -> dict:
        assert main(["--store", url, "policy", "list", "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        return {k: row[k] for k in ("allowed", "dropped", "hosts")}

    assert listed() == {"allowed": 15, "dropped": 3, "hosts": 2}
    assert main(["--store", url, "policy", "show", "db-in"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("allowed:  15\ndropped:  3\nhosts:    2\n{")
    store.revoke(dying)  # as its lease expiring does
    assert listed() == {"allowed": 10, "dropped": 2, "hosts": 1}


def test_status_names_the_hosts_behind_the_policy_revision(url, store, tmp_path, capsys):
    assert apply(url, tmp_path, GOOD) == 0
    capsys.readouterr()
    current = policies.revision(store.range(Policies.PREFIX, prefix=True).kvs)
    report(store, "h1", current, {})
    report(store, "h2", current - 1, {}, error="nft refused netplug's rules: boom")
    report(store, "h3", None, {})
    store.put(Hosts.key("h4"), Hosts.encode(HostRecord()))  # live
    store.put(Enforcement.key("h4"), b"not json")  # its report unreadable

    assert main(["--store", url, "status", "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert status["policyRevision"] == current
    assert status["policyEnforcedBy"] == "1 of 4 live host(s)"
    assert status["hostsBehind"] == [
        {"host": "h2", "enforces": current - 1, "error": "nft refused netplug's rules: boom"},
        {"host": "h3", "enforces": None, "error": ""},
        {"host": "h4", "enforces": None, "error": ""},
    ]
    assert main(["--store", url, "status"]) == 0
    text = capsys.readouterr().out
    assert f"policies:     revision {current}, enforced by 1 of 4 live host(s)" in text
    assert f"host h2 enforces revision {current - 1}: nft refused netplug's rules: boom" in text
    assert "host h3 enforces no revision yet" in text
    assert "host h4 has not reported" in text
    assert "unreadable report /netplug/enforcement/h4: MalformedRecord" in text

    assert main(["--store", url, "policy", "delete", "db-in"]) == 0  # moves the revision on
    assert main(["--store", url, "status", "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert status["policyRevision"] > current and len(status["hostsBehind"]) == 4
