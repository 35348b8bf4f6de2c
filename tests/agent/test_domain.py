"""ActionRecord.but, the executor's fast copy of a record, against dataclasses.replace."""

from __future__ import annotations

import dataclasses

import pytest

from edgebed.agent.domain import ActionRecord, Environment

RECORD = ActionRecord(
    node_name="pi-1", node_ip="10.0.0.1", environment="bookworm", process="deploy",
    state="copy_image", state_idx=5, updated_at=1_700_000_000, progress=40, reboots=1,
    action_id=7, started_at=1_699_999_000, elapsed=12.5, properties={"os_password": "s3cret"},
    environment_spec=Environment(name="bookworm", image="/i.img"), last_error="x",
)

# A new value for every field, of its type.
CHANGES = {
    "node_name": "pi-2", "node_ip": "10.0.0.2", "environment": "trixie", "process": "destroy",
    "state": "partition", "state_idx": 6, "updated_at": 1_700_000_001, "progress": 0, "reboots": 2,
    "action_id": 8, "started_at": 1_700_000_000, "elapsed": 13.0, "properties": {},
    "environment_spec": None, "last_error": "",
}


def test_every_field_is_covered() -> None:
    assert set(CHANGES) == {f.name for f in dataclasses.fields(ActionRecord)}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_but_changes_one_field_as_replace_does(name: str) -> None:
    copied = RECORD.but(**{name: CHANGES[name]})
    assert copied == dataclasses.replace(RECORD, **{name: CHANGES[name]})
    assert type(copied) is ActionRecord
    # The original is untouched, and the copy is as frozen as a constructed record.
    assert RECORD == dataclasses.replace(RECORD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        copied.state = "x"  # type: ignore[misc]


def test_but_changes_several_fields_and_refuses_a_name_that_is_no_field() -> None:
    assert RECORD.but(state="lost", progress=3) == dataclasses.replace(RECORD, state="lost", progress=3)
    with pytest.raises(TypeError, match="no field 'stat'"):
        RECORD.but(stat="lost")
