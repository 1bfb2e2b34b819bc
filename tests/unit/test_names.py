"""The rules for names that become store keys and paths, and their CLI form."""

import argparse

import pytest

from netplug.names import (
    HOST_NAME,
    HOST_NAME_MAX,
    NETWORK_NAME,
    NETWORK_NAME_MAX,
    is_dns_label,
    is_host_name,
    is_id,
    is_network_name,
)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("node-1", True),
        ("node-1.example.com", True),  # the default is the machine's hostname
        ("Node_1", True),
        ("a" * HOST_NAME_MAX, True),
        ("a" * (HOST_NAME_MAX + 1), False),
        ("", False),
        ("h1/evil", False),  # would nest its records under h1
        (".", False),
        ("..", False),
        ("-node", False),
        ("_node", False),
        ("node 1", False),
        ("nöde", False),
        ("node\0", False),
        ("node\udcff", False),
    ],
)
def test_is_host_name(name: str, ok: bool) -> None:
    assert is_host_name(name) is ok


def test_ids_have_no_length_limit() -> None:
    assert is_id("c" * 1000) and not is_id("a/b")


def test_network_names_fit_in_a_file_name_under_run_dir() -> None:
    assert is_network_name("n" * NETWORK_NAME_MAX) and NETWORK_NAME_MAX == 241
    assert not is_network_name("n" * (NETWORK_NAME_MAX + 1))
    assert not is_network_name("a/b") and not is_network_name("")
    # the longest name's file, while ADD writes it, with a thread ID of 7 digits
    assert len(f".{'n' * NETWORK_NAME_MAX}.json.{4194304}".encode()) == 255


def test_cli_types_answer_the_name_or_say_the_rule() -> None:
    assert HOST_NAME("node-1.example.com") == "node-1.example.com"
    with pytest.raises(argparse.ArgumentTypeError, match=r"'h1/evil' is not a valid host name"):
        HOST_NAME("h1/evil")
    with pytest.raises(argparse.ArgumentTypeError, match="network name: expected letters"):
        NETWORK_NAME("a/b")


@pytest.mark.parametrize(
    ("label", "ok"),
    [
        ("web", True),
        ("Web-1", True),
        ("1", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        ("-web", False),
        ("web-", False),
        ("under_score", False),
        ("dot.ted", False),
        ("café", False),
        ("sp ace", False),
    ],
)
def test_is_dns_label(label: str, ok: bool) -> None:
    assert is_dns_label(label) is ok
