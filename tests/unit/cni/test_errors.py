"""CNIError, the error codes, and the shared "bad input" message helpers."""

import pytest

from netplug.cni import errors
from netplug.cni.errors import CNIError, expect, json_field, required_field, show


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("INCOMPATIBLE_VERSION", 1),
        ("UNSUPPORTED_FIELD", 2),
        ("UNKNOWN_CONTAINER", 3),
        ("INVALID_ENV", 4),
        ("IO_FAILURE", 5),
        ("DECODE_FAILURE", 6),
        ("INVALID_CONFIG", 7),
        ("INVALID_NETNS", 8),
        ("TRY_AGAIN_LATER", 11),
        ("NOT_AVAILABLE", 50),
        ("LIMITED_CONNECTIVITY", 51),
        ("INTERNAL", 999),
    ],
)
def test_codes_match_the_spec(name: str, code: int) -> None:
    assert getattr(errors, name) == code


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ("", {"cniVersion": "1.0.0", "code": 7, "msg": "bad"}),
        ("why", {"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "why"}),
    ],
)
def test_to_json_omits_empty_details(details: str, expected: dict) -> None:
    assert CNIError(7, "bad", details).to_json("1.0.0") == expected


def test_error_carries_code_msg_details() -> None:
    e = CNIError(11, "store unreachable", "timeout")
    assert (e.code, e.msg, e.details) == (11, "store unreachable", "timeout")
    assert str(e) == "store unreachable"


@pytest.mark.parametrize(
    ("value", "kind", "ok"),
    [
        ("x", str, True),
        (3, int, True),
        (True, bool, True),
        ({}, dict, True),
        ([], list, True),
        (True, int, False),  # bool is an int in Python, not in JSON
        (3, bool, False),
        (3.0, int, False),
        ("3", int, False),
        (None, str, False),
        ([], dict, False),
    ],
)
def test_expect_checks_json_types(value: object, kind: type, ok: bool) -> None:
    if ok:
        assert expect(value, kind, "f") is value
    else:
        with pytest.raises(CNIError) as e:
            expect(value, kind, "vxlan.vni", errors.DECODE_FAILURE)
        assert e.value.code == errors.DECODE_FAILURE
        assert e.value.msg.startswith("vxlan.vni: expected ")
        assert e.value.msg.endswith(f"got {show(value)}")


def test_json_field_treats_null_as_absent() -> None:
    assert json_field({"a": None}, "a", int, "", 5) == 5
    assert json_field({}, "a", int, "", 5) == 5
    with pytest.raises(CNIError, match=r"^x\.a: expected an integer, got \"1\"$") as e:
        json_field({"a": "1"}, "a", int, "x.")
    assert e.value.code == errors.INVALID_CONFIG


def test_required_field_names_the_missing_key() -> None:
    with pytest.raises(CNIError, match=r"^ipam\.subnet is missing: expected a string$"):
        required_field({}, "subnet", str, "ipam.")


def test_show_keeps_messages_on_one_short_line() -> None:
    assert show("a") == '"a"'
    long = show({"k": "v" * 200})
    assert len(long) == 80 and long.endswith("...")
