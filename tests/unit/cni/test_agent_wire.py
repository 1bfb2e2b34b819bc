import pytest

from netplug.cni import agent_wire as wire


def test_call_round_trip_keeps_env_and_raw_stdin():
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "IP=10.0.0.5;K8S_POD_NAME=web", "EMPTY": ""}
    stdin = b'{"name": "blue"}\n\x00\xff binary tail'
    assert wire.decode_call(wire.encode_call(env, stdin)) == (env, stdin)


def test_call_with_no_env_and_no_stdin():
    assert wire.decode_call(wire.encode_call({}, b"")) == ({}, b"")


@pytest.mark.parametrize("status", [0, 1, None])
def test_reply_round_trip(status):
    frame = wire.encode_reply(status, "/var/log/x.log", "ADD ok\nsecond line", b'{"a": 1}\n\n')
    assert wire.decode_reply(frame) == (
        status,
        "/var/log/x.log",
        "ADD ok second line",
        b'{"a": 1}\n\n',
    )


@pytest.mark.parametrize("frame", [b"", b"garbage", b"x\n\n\n", b"12"])
def test_malformed_frames_raise_value_error(frame):
    with pytest.raises(ValueError):
        wire.decode_reply(frame)
    with pytest.raises(ValueError):
        wire.decode_call(frame)
