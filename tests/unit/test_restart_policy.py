"""The supervisor's restart rule for workers and Envoy: back off, give up on a crash loop."""

from __future__ import annotations

from devicehub.runtime.workers import RestartPolicy, RestartTracker


def test_restarts_back_off_and_a_crash_loop_gives_up():
    policy = RestartPolicy(limit=5, window=60)
    tracker = RestartTracker("worker 0", policy)
    assert [tracker.record_death(now) for now in (0, 1, 2, 3)] == [0.5, 1, 2, 4]
    assert tracker.record_death(4) is None  # the 5th death within 60 s
    assert tracker.crash_loop_message().startswith("worker 0 died 5 times within 60 s")
    calm = RestartTracker("envoy", policy)
    assert [calm.record_death(now) for now in (0, 10)] == [0.5, 1]
    assert calm.record_death(65) == 1  # the death at 0 s no longer counts
    assert calm.record_death(200) == 0.5  # a healthy window: back to the first delay
    patient = RestartTracker("worker 1", RestartPolicy(limit=100, window=1000))
    assert [patient.record_death(now) for now in range(9)][-3:] == [30, 30, 30]
