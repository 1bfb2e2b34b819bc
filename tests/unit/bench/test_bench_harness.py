"""The benches' shared helpers that need no namespaces: the DNS probe's query and
its reply check (dnslib on both sides, the reply's header only), the parser and
the report every namespace bench uses."""

from __future__ import annotations

import json

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from harness import bench_parser, dns_answered, dns_query, report

NAME = "web.blue.netplug.internal"


def reply(qid: int, answers: int = 1, rcode: int = RCODE.NOERROR) -> bytes:
    answer = DNSRecord.parse(dns_query(NAME, qid)).reply()
    answer.header.rcode = rcode
    for i in range(answers):
        answer.add_answer(RR(NAME, QTYPE.A, rdata=A(f"10.244.0.{i + 2}")))
    return answer.pack()


def test_the_query_asks_for_the_name_with_its_id():
    query = DNSRecord.parse(dns_query(NAME, 4242))
    assert query.header.id == 4242 and str(query.q.qname) == NAME + "."


@pytest.mark.parametrize(
    ("wire", "answered"),
    [
        (reply(7), True),
        (reply(8), False),  # another query's
        (reply(7, answers=0), False),  # the name, no record yet
        (reply(7, answers=0, rcode=RCODE.NXDOMAIN), False),
        (reply(7, rcode=RCODE.SERVFAIL), False),
        (dns_query(NAME, 7), False),  # not a response: the query echoed
        (reply(7)[:11], False),  # shorter than a header
        (b"", False),
    ],
    ids=["answer", "other-id", "no-record", "nxdomain", "servfail", "query", "short", "empty"],
)
def test_a_reply_counts_only_as_the_answer_to_its_query(wire, answered):
    assert dns_answered(wire, 7) is answered


def test_the_bench_parser_says_what_a_run_needs_and_picks_parts():
    parser = bench_parser("Title line.\n\nMore.", "root and ping", ("a", "b"))
    assert parser.description == "Title line."
    assert parser.epilog.startswith("Needs root and ping. Namespaces are named npb-<random>-")
    assert parser.parse_args(["--only", "b", "--only", "a"]).only == ["b", "a"]
    assert parser.parse_args([]).only is None  # the script takes every part
    assert not any(a.dest == "only" for a in bench_parser("T.", "root")._actions)


def test_the_report_is_the_table_then_where_it_was_measured(tmp_path, capsys):
    assert report(["| a |", "| 1 |"], "2 CPUs", "x_bench.py", None, {}) == 0
    assert capsys.readouterr().out == "| a |\n| 1 |\n\nMeasured on 2 CPUs (`bench/x_bench.py`).\n"
    report([], "2 CPUs", "x_bench.py", str(tmp_path / "r.json"), {"n": 1, "p": tmp_path})
    assert json.loads((tmp_path / "r.json").read_text()) == {"n": 1, "p": str(tmp_path)}
