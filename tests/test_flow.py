"""Session flow with a behaving fake recording: consent, script steps, pause, stop codes,
unexpected stops, live warnings."""

from __future__ import annotations

import time

import numpy as np
import pytest

from station.errors import StopCode
from station.flow import BadRequest, FakeRecording, FlowState, HealthWatch, NotAllowed, SessionFlow
from station.policy import Policy
from station.shield import shield


class Made:
    def __init__(self):
        self.sessions: list[FakeRecording] = []

    def __call__(self, **kw):
        s = FakeRecording(**kw)
        self.sessions.append(s)
        return s


@pytest.fixture
def flow():
    made = Made()
    f = SessionFlow(Policy.defaults(), made, agent="agent7")
    f.made = made
    return f


def markers(rec: FakeRecording):
    return [(d["kind"], d["label"]) for k, d in rec.events if k == "marker"]


def test_full_flow_turns_consent_and_every_step_into_markers(flow):
    events = []
    flow.subscribe(lambda n, d: events.append((n, d.get("state"))))
    sid = flow.start(customer=shield({"number": "13812345678"}, b"x" * 32), business_ref="CRM-1")
    assert flow.state is FlowState.CONSENT
    flow.agree()
    for step in flow.steps:
        flow.tick(step)
    flow.pause("customer reads card")
    assert flow.snapshot()["pause_reason"] == "customer reads card"
    flow.resume()
    summary = flow.stop()
    rec = flow.made.sessions[0]
    assert summary["session_id"] == sid and rec.stop_code is StopCode.NORMAL
    assert markers(rec) == [("consent", "agreed")] + [("script_step", s) for s in flow.steps]
    assert [k for k, _ in rec.events if k in ("pause", "resume", "stop")] == ["pause", "resume", "stop"]
    assert rec.customer.masked == {"number": "138****5678"} and rec.customer.hash.startswith("hs256:")
    assert ("state_changed", "stopped") in events
    assert flow.snapshot()["steps_done"] == []  # next session starts clean


def test_refused_consent_ends_the_session_with_its_stop_code(flow):
    flow.start()
    flow.refuse()
    rec = flow.made.sessions[0]
    assert flow.state is FlowState.STOPPED and flow.stop_code is StopCode.CONSENT_REFUSED
    assert rec.stop_code is StopCode.CONSENT_REFUSED and ("consent", "refused") in markers(rec)


def test_actions_out_of_order_are_refused_and_change_nothing(flow):
    with pytest.raises(NotAllowed):
        flow.stop()
    flow.start()
    with pytest.raises(NotAllowed):
        flow.tick(flow.steps[0])  # consent first
    with pytest.raises(NotAllowed):
        flow.start()
    flow.agree()
    with pytest.raises(BadRequest, match="reason"):
        flow.pause("   ")
    with pytest.raises(BadRequest, match="unknown script step"):
        flow.tick("dance")
    flow.tick(flow.steps[0])
    with pytest.raises(NotAllowed):
        flow.tick(flow.steps[0])
    with pytest.raises(NotAllowed):
        flow.resume()
    assert flow.state is FlowState.RECORDING
    assert markers(flow.made.sessions[0]) == [("consent", "agreed"), ("script_step", flow.steps[0])]


def test_device_lost_in_a_worker_thread_stops_the_flow_and_tells_listeners(flow):
    seen = []
    flow.subscribe(lambda n, d: seen.append((n, d)))
    flow.start()
    flow.agree()
    flow.made.sessions[0].fail(StopCode.DEVICE_LOST, "camera unplugged")
    deadline = time.monotonic() + 5
    while not any(n == "stopped_unexpectedly" for n, _ in seen) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flow.state is FlowState.STOPPED and flow.stop_code is StopCode.DEVICE_LOST
    assert flow.stop_error == "camera unplugged"
    unexpected = [d for n, d in seen if n == "stopped_unexpectedly"]
    assert unexpected and unexpected[0]["code"] == "device-lost"


def test_cti_agent_identity_is_used_only_when_policy_says_so(flow):
    flow.start(agent="cti-42")
    assert flow.made.sessions[-1].agent == "agent7"
    flow.stop()
    flow.policy = Policy.defaults().replace(station__agent_source="cti")
    flow.start(agent="cti-42")
    assert flow.made.sessions[-1].agent == "cti-42"


def test_live_warnings_begin_after_their_delay_and_end_when_fixed():
    clock = [0]
    watch = HealthWatch(no_face_s=2, silence_s=3, black_s=1)
    black = np.zeros((90, 160, 3), np.uint8)
    noisy = np.random.default_rng(1).integers(0, 255, (90, 160, 3), dtype=np.uint8)

    def step(s, health):
        clock[0] += int(s * 1e9)
        return watch.update(health, clock[0])

    assert step(0, {"camera_thumbnail": black, "mic_dbfs": -80}) == []
    assert step(1.1, {"camera_thumbnail": black, "mic_dbfs": -80}) == [("camera_black", True)]
    assert step(2.0, {"camera_thumbnail": noisy, "mic_dbfs": -80}) == [("camera_black", False),
                                                                       ("mic_silent", True)]
    assert step(2.1, {"camera_thumbnail": noisy, "mic_dbfs": -80}) == [("no_face", True)]
    assert step(0.1, {"camera_thumbnail": noisy, "mic_dbfs": -20}) == [("mic_silent", False)]
    assert step(0.1, {"errors": ["camera: read failed"]}) == [("device_lost", True)]


def test_flow_writes_live_warnings_into_the_operation_log(flow):
    flow.start()
    flow.agree()
    rec = flow.made.sessions[0]
    rec.next_health = {"errors": [], "camera_thumbnail": np.zeros((60, 80, 3), np.uint8)}
    watch = HealthWatch(black_s=0)
    assert flow.check_health(watch) == [("camera_black", True)]
    assert ("oplog", {"kind": "warning", "warning": "camera_black", "active": True}) in rec.events
    assert flow.snapshot()["warnings"] == ["camera_black"]


def test_a_recording_that_ends_by_itself_normally_still_ends_the_flow(flow):
    seen = []
    flow.subscribe(lambda n, d: seen.append(n))
    flow.start()
    flow.agree()
    flow.made.sessions[0].fail(StopCode.NORMAL, "maximum session length reached")
    deadline = time.monotonic() + 5
    while "stopped_unexpectedly" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flow.state is FlowState.STOPPED and flow.stop_code is StopCode.NORMAL
    assert "stopped_unexpectedly" in seen


def test_a_pause_during_consent_returns_to_consent(flow):
    flow.start()
    flow.pause("customer on hold")
    assert flow.state is FlowState.PAUSED
    flow.resume()
    assert flow.state is FlowState.CONSENT
    flow.agree()
    assert flow.state is FlowState.RECORDING
