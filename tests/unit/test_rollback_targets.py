"""Which release a rollback re-releases: examples, and properties over generated histories."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amirelease.errors import PreflightError
from amirelease.ledger import discredited, pick_rollback_target, rolled_back_entry


def rec(rid, version, outcome="succeeded", n=0, re_release_of=None, rolled_back=False):
    return {
        "app": "a",
        "release_id": rid,
        "version": version,
        "outcome": outcome,
        "started_at": f"2026-01-01T00:{n:02d}:00Z",
        "finished_at": f"2026-01-01T00:{n:02d}:30Z",
        "re_release_of": re_release_of,
        "bundle": {"key": f"k/{rid}", "sha256": "0" * 64},
        "rolled_back": rolled_back_entry(at="t", by_run="r", by_dag="ami_rollback", by_release_id="x", reason="bad")
        if rolled_back
        else None,
    }


def test_the_reported_defect_second_rollback_does_not_pick_the_rolled_back_release():
    """1.1.0, 1.2.0, rollback (-> re-release of 1.1.0; 1.2.0 rolled back), rollback again:
    the second rollback must not pick 1.2.0 (it picked it before the fix)."""
    h = [
        rec("r110", "1.1.0", n=1),
        rec("r120", "1.2.0", n=2, rolled_back=True),
        rec("r110b", "1.1.0", n=3, re_release_of="r110"),
        rec("r100", "1.0.0", n=0),
    ]
    target = pick_rollback_target(h, current_release_id="r110b")
    assert target["release_id"] == "r100"  # 1.1.0 failed twice as far as the operator is concerned
    with pytest.raises(PreflightError, match="was rolled back") as err:
        pick_rollback_target(h, "r110b", "1.2.0")
    assert "confirm_rolled_back" in str(err.value)
    assert pick_rollback_target(h, "r110b", "1.2.0", allow_rolled_back=True)["release_id"] == "r120"


def test_examples():
    h = [rec("r1", "1.0.0", n=1), rec("r2", "1.1.0", "failed", n=2), rec("r3", "1.2.0", n=3), rec("r4", "1.3.0", n=4)]
    assert pick_rollback_target(h, "r4")["release_id"] == "r3"
    assert pick_rollback_target(h, "r4", "1.0.0")["release_id"] == "r1"
    assert pick_rollback_target(h, None)["release_id"] == "r4"  # nothing of ours runs: the newest good one
    with pytest.raises(PreflightError, match="no successful release '1.1.0'"):
        pick_rollback_target(h, "r4", "1.1.0")
    with pytest.raises(PreflightError, match="no successful release '0'"):
        pick_rollback_target(h, "r4", "0")
    with pytest.raises(PreflightError, match="no earlier good release"):
        pick_rollback_target([rec("r1", "1.0.0")], "r1")
    with pytest.raises(PreflightError, match="predates release bundles"):
        pick_rollback_target([{**rec("r1", "1.0.0"), "bundle": None}, rec("r2", "2.0.0", n=2)], "r2")
    with pytest.raises(PreflightError, match="is the one running now"):
        pick_rollback_target(h, "r4", "r4")
    # 1.10 and 1.1 are different versions (a float would make them equal)
    h2 = [rec("a", "1.1", n=1), rec("b", "1.10", n=2), rec("c", "2.0.0", n=3)]
    assert pick_rollback_target(h2, "c", "1.10")["release_id"] == "b"


def test_discredit_follows_re_release_chains():
    h = [rec("a", "1.0.0", n=1), rec("b", "1.0.0", n=2, re_release_of="a"), rec("c", "1.0.0", n=3, re_release_of="b")]
    assert discredited(h) == set()
    assert discredited(h, being_rolled_back="c") == {"a", "b", "c"}
    h[0]["rolled_back"] = {"reason": "x"}
    assert discredited(h) == {"a", "b", "c"}


# --- properties over generated sequences -----------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("release"), st.booleans()),  # (kind, succeeded)
        st.tuples(st.just("rollback"), st.booleans()),  # (kind, the re-release succeeded)
        st.tuples(st.just("explicit"), st.integers(0, 30), st.booleans()),  # (kind, index of a target, confirm)
    ),
    min_size=1,
    max_size=25,
)


def simulate(seq):
    """Apply events the way the DAGs do; yield (history, current, target) at every default rollback."""
    history: list[dict] = []
    current = None
    for n, ev in enumerate(seq):
        if ev[0] == "release":
            history.append(rec(f"r{n}", f"1.{n}.0", "succeeded" if ev[1] else "failed", n=n))
            if ev[1]:
                current = f"r{n}"
            continue
        wanted = None
        confirm = False
        if ev[0] == "explicit":
            if not history:
                continue
            wanted = history[ev[1] % len(history)]["release_id"]
            confirm = ev[2]
        try:
            target = pick_rollback_target(history, current, wanted, allow_rolled_back=confirm)
        except PreflightError:
            continue
        if wanted is None:
            yield [dict(r) for r in history], current, target
        if current:  # mark_rolled_back runs before the bake, whatever happens after
            for r in history:
                if r["release_id"] == current:
                    r["rolled_back"] = rolled_back_entry(
                        at="t", by_run=f"run{n}", by_dag="ami_rollback", by_release_id=f"r{n}", reason="bad"
                    )
        ok = ev[-1] if ev[0] == "rollback" else True
        history.append(
            rec(f"r{n}", target["version"], "succeeded" if ok else "failed", n=n, re_release_of=target["release_id"])
        )
        if ok:
            current = f"r{n}"


@settings(max_examples=300, deadline=None)
@given(events)
def test_default_target_is_never_rolled_back_running_or_failed(seq):
    for history, current, target in simulate(seq):
        by_id = {r["release_id"]: r for r in history}
        assert target["outcome"] == "succeeded"
        assert target["release_id"] != current
        assert not target.get("rolled_back")
        assert target.get("re_release_of") is None or not by_id[target["re_release_of"]].get("rolled_back")
        # nor the code running now under another id (a re-release of the current one, or the one it repeats)
        if current:
            assert target["release_id"] not in discredited(history, being_rolled_back=current)
