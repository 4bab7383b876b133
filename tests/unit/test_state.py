"""The status rules the client, the CLI and the dashboard share."""

from __future__ import annotations

import pytest

from perdure import OrchestrationStatus
from perdure._state import ACTIONS

S = OrchestrationStatus


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        (S.PENDING, {"terminate", "suspend", "raise_event"}),
        (S.RUNNING, {"terminate", "suspend", "raise_event"}),
        (S.SUSPENDED, {"terminate", "resume", "raise_event"}),
        (S.COMPLETED, {"purge"}),
        (S.FAILED, {"rewind", "purge"}),
        (S.TERMINATED, {"purge"}),
    ],
)
def test_each_status_allows_exactly_its_actions(status: OrchestrationStatus, allowed: set[str]) -> None:
    assert status.allowed_actions == allowed
    assert status.allowed_actions <= set(ACTIONS)


def test_every_action_is_allowed_somewhere_and_purge_exactly_when_finished() -> None:
    assert set().union(*(s.allowed_actions for s in S)) == set(ACTIONS)
    assert {s for s in S if "purge" in s.allowed_actions} == {s for s in S if s.is_terminal}
