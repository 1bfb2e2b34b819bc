"""The fault-injection seam: which points fail, and with what."""

import pytest

from netplug import faults


class StepFailed(Exception):
    pass


@pytest.mark.parametrize(
    ("spec", "point", "raised"),
    [
        (None, "ensure_bridge", None),  # unset: nothing is injected
        ("", "ensure_bridge", None),
        ("ensure_bridge", "ensure_bridge", StepFailed),
        ("ensure_bridge", "ensure_bridge.after", None),  # a point is named exactly
        ("masq, ensure_bridge.after", "ensure_bridge.after", StepFailed),
        ("configure_container:bug", "configure_container", RuntimeError),
        ("undo delete veth", "undo delete veth", StepFailed),
    ],
)
def test_check_fails_exactly_the_named_points(monkeypatch, spec, point, raised):
    if spec is None:
        monkeypatch.delenv(faults.ENV, raising=False)
    else:
        monkeypatch.setenv(faults.ENV, spec)
    if raised is None:
        faults.check(point, StepFailed)
    else:
        with pytest.raises(raised, match=f"^injected failure in {point}$"):
            faults.check(point, StepFailed)


def test_step_fails_after_the_work_is_done(monkeypatch):
    monkeypatch.setenv(faults.ENV, "work.after")
    done = []
    with pytest.raises(StepFailed):
        faults.step("work", StepFailed, done.append, 1)
    assert done == [1]


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("masq", (faults.Fault("masq"),)),
        (
            " overlay*2 , undo delete veth:bug,store-view*1:bug",
            (
                faults.Fault("overlay", 2),
                faults.Fault("undo delete veth", bug=True),
                faults.Fault("store-view", 1, True),
            ),
        ),
    ],
)
def test_a_spec_parses_into_faults(spec, parsed):
    assert faults.parse(spec) == parsed


@pytest.mark.parametrize(
    "spec", ["overlay*x", "overlay*", "masq:crash", "masq,", "*3", "masq:bug:bug", "Masq"]
)
def test_a_malformed_spec_is_refused_naming_the_form(spec):
    with pytest.raises(faults.FaultSpecError, match=r"^NETPLUG_FAULTS: expected POINT\[\*COUNT\]"):
        faults.parse(spec)


def test_the_spec_is_parsed_once_per_value(monkeypatch):
    parsed = []
    real = faults.parse
    monkeypatch.setattr(faults, "parse", lambda spec: parsed.append(spec) or real(spec))
    monkeypatch.setenv(faults.ENV, "masq")
    for _ in range(3):
        faults.check("ensure_bridge", StepFailed)
    assert faults.notice() == "fault injection armed: NETPLUG_FAULTS=masq"
    monkeypatch.setenv(faults.ENV, "create_pair")
    with pytest.raises(StepFailed):
        faults.check("create_pair", StepFailed)
    assert parsed == ["masq", "create_pair"]


def test_nothing_armed_is_no_notice(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.armed() == () and faults.notice() == ""


def test_netplugd_refuses_to_start_on_a_malformed_spec(monkeypatch, tmp_path, caplog):
    from netplug.agent import daemon

    monkeypatch.setenv(faults.ENV, "overlay*x")
    store = tmp_path / "never-made.db"
    assert daemon.main(["--store", f"sqlite://{store}", "--host-name", "h1"]) == 2
    assert "refusing to start: NETPLUG_FAULTS: expected POINT[*COUNT][:bug]" in caplog.text
    assert not store.exists()  # before the store is opened
