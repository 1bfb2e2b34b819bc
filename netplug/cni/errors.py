"""CNI error codes and the one exception that carries them.

Codes come from the SPEC.md "Error" table and libcni's `pkg/types/types.go`. Raise
`CNIError` where the meaning is known; the plugin's entry point writes `to_json()` to
stdout (libcni reads the error from stdout, not stderr) and exits non-zero.

`expect`, `json_field` and `invalid` give every "bad input" error the same shape,
`WHERE: expected WHAT, got VALUE`, because the spec wants the message to name the
offending key and value (codes 2 and 4) and users fix configs from that message.
"""

from __future__ import annotations

import json

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8  # libcni-only (ErrInvalidNetNS), not in the SPEC table
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999  # libcni's ErrInternal: anything unexpected
# netplug's own (the spec leaves 100+ to plugins); 100-103 are the IPAM's and ADD's.
STORE_RESET = 104  # the store was emptied or replaced: `netplugctl recover`
STORE_CORRUPT = 105  # the store's data is damaged: not worth retrying

_JSON_TYPES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    dict: "an object",
    list: "a list",
}
_SHOW_LIMIT = 80


class CNIError(Exception):
    """A failure the runtime should see as a CNI error object.

    `code` is one of the constants above (or >= 100 for plugin-specific errors),
    `msg` a one-line explanation, `details` optional longer text.
    """

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict:
        """The error object of the spec; `details` is omitted when empty (Go's omitempty)."""
        out: dict = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def show(value: object) -> str:
    """`value` as the user wrote it in JSON, cut short so one message stays one line."""
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def invalid(where: str, value: object, expected: str, code: int = INVALID_CONFIG) -> CNIError:
    """The error for `value` at JSON path `where` when `expected` was wanted."""
    return CNIError(code, f"{where}: expected {expected}, got {show(value)}")


def expect(value: object, kind: type, where: str, code: int = INVALID_CONFIG):
    """Return `value` when it has the JSON type `kind` (str, int, bool, dict or list).

    Raises CNIError(code) naming `where`, the value and the expected type otherwise.
    """
    # bool subclasses int in Python, but true/false is no number in JSON.
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise invalid(where, value, _JSON_TYPES[kind], code)


def json_field(
    obj: dict, key: str, kind: type, where: str, default=None, code: int = INVALID_CONFIG
):
    """`obj[key]` checked with `expect`; `default` when the key is absent or null.

    `where` is the JSON path prefix of `obj` ("" at the top, "vxlan." inside vxlan).
    A null counts as absent, as Go's decoder leaves the zero value for it.
    """
    value = obj.get(key)
    return default if value is None else expect(value, kind, where + key, code)


def required_field(obj: dict, key: str, kind: type, where: str, code: int = INVALID_CONFIG):
    """Like `json_field`, but a missing key raises CNIError(code) naming it."""
    value = json_field(obj, key, kind, where, None, code)
    if value is None:
        raise CNIError(code, f"{where}{key} is missing: expected {_JSON_TYPES[kind]}")
    return value
