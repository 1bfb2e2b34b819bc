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
