"""The decision function: property-based over generated accounts, plus the edge cases."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amirelease.retention.decide import Action, decide, needs_usage
from amirelease.retention.marks import parse_mark
from amirelease.retention.model import Image, Usage
from amirelease.retention.policy import RetentionPolicy

UTC = UTC
ME, OTHER = "123456789012", "999999999999"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy(max_deregistrations_per_run=10_000)

PROTECT_VARIANTS = [
    ("RetainIndefinitely", "true"),  # the only one that protects
    ("retainindefinitely", "true"),
    ("RetainIndefinitely", "True"),
    ("RetainIndefinitely", "yes"),
    ("RetainIndefinitely", " true"),
    ("RetainIndefinitely", "true "),
    ("RetainIndefinitely", "TRUE"),
    ("Retainindefinitely", "true"),
    ("RetainIndefinitely ", "true"),
    ("RetainIndefinitely", ""),
]
HOLD_VARIANTS = [("ForensicHold", "rel-42"), ("ForensicHold", " "), ("ForensicHold", ""), ("forensichold", "x")]


def _mark(due: datetime, fmt: int) -> str:
    return [
        f"Resource does not meet policy: deregister@{due:%Y/%m/%d}",
        f"Resource does not meet policy: deregister@{due:%Y/%m/%d %H%M} UTC",
        f"Resource does not meet policy: delete@{due:%Y/%m/%d}",
        f"Resource does not meet policy: stop@{due:%Y/%m/%d}",  # other op: not ours
        "garbage",
    ][fmt]


ages = st.one_of(
    st.floats(min_value=0, max_value=59.9),
    st.floats(min_value=59.9, max_value=60.1),
    st.floats(min_value=60.1, max_value=400),
    st.sampled_from([60.0, 60 + 1 / 24, 60 - 1 / 24]),
).map(lambda d: None if d != d else d)


@st.composite
def accounts(draw):
    n = draw(st.integers(min_value=0, max_value=25))
    snapshot_pool = [f"snap-{i:04d}" for i in range(draw(st.integers(1, 30)))]
    images, instances, references = [], {}, {}
    for i in range(n):
        image_id = f"ami-{i:08x}"
        tags = {}
        if draw(st.booleans()):
            k, v = draw(st.sampled_from(PROTECT_VARIANTS))
            tags[k] = v
        if draw(st.integers(0, 4)) == 0:
            k, v = draw(st.sampled_from(HOLD_VARIANTS))
            tags[k] = v
        if draw(st.booleans()):
            due = NOW + timedelta(hours=draw(st.integers(-24 * 30, 24 * 30)))
            tags["maid_status"] = _mark(due, draw(st.integers(0, 4)))
        age = draw(ages)
        created = None if draw(st.integers(0, 30)) == 0 else NOW - timedelta(days=age)
        images.append(
            Image(
                image_id=image_id,
                owner_id=draw(st.sampled_from([ME, ME, ME, OTHER])),
                creation_date=created,
                name=f"app-{i}",
                tags=tags,
                snapshot_ids=tuple(draw(st.lists(st.sampled_from(snapshot_pool), max_size=3, unique=True))),
            )
        )
        if draw(st.integers(0, 3)) == 0:
            instances[image_id] = [f"i-{i:04x}{j}" for j in range(draw(st.integers(1, 3)))]
        if draw(st.integers(0, 5)) == 0:
            references[image_id] = [f"referenced by launch template lt-{i:04x} v1 (ASG asg-{i})"]
    return images, Usage(instances=instances, references=references)


@st.composite
def backlogs(draw):
    """An account with a backlog: 0-15 eligible images whose marks are due (on distinct or equal
    dates, some sharing snapshots), mixed into a generated account."""
    images, usage = draw(accounts())
    due = []
    for i in range(draw(st.integers(0, 15))):
        when = NOW - timedelta(days=draw(st.integers(0, 40)), hours=draw(st.integers(0, 23)))
        due.append(
            Image(
                image_id=f"ami-due-{i:03d}",
                owner_id=ME,
                creation_date=NOW - timedelta(days=draw(st.integers(61, 400))),
                name=f"due-{i}",
                tags={"maid_status": _mark(when, draw(st.integers(0, 2)))},
                snapshot_ids=tuple(
                    draw(st.lists(st.sampled_from(["snap-a", "snap-b", f"snap-{i}"]), max_size=2, unique=True))
                ),
            )
        )
    return images + due, usage


def oracle_eligible(image: Image, usage: Usage, now: datetime) -> bool:
    """The rule, written out independently of the implementation."""
    return (
        image.owner_id == ME
        and image.creation_date is not None
        and (now - image.creation_date) > timedelta(days=60)
        and not usage.instances.get(image.image_id)
        and not usage.references.get(image.image_id)
        and image.tags.get("RetainIndefinitely") != "true"
        and image.tags.get("ForensicHold", "") == ""
    )


def oracle_mark(image: Image):
    mark = parse_mark(image.tags.get("maid_status"))
    return mark if mark is not None and mark.op in ("deregister", "delete") else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accounts(), st.integers(min_value=-48, max_value=48))
def test_properties(account, hours):
    images, usage = account
    now = NOW + timedelta(hours=hours)
    plan = decide(images, usage, now, POLICY, account_id=ME)
    by_id = {d.image_id: d for d in plan.decisions}
    assert len(by_id) == len(images) == len(plan.decisions)
    leaving = {d.image_id for d in plan.of(Action.DEREGISTER)}

    for image in images:
        d = by_id[image.image_id]
        eligible = oracle_eligible(image, usage, now)
        mark = oracle_mark(image)
        if d.action is Action.DEREGISTER:
            # never deregister what is in use, protected, held, young, or not (due-)marked
            assert eligible
            assert not usage.instances.get(image.image_id)
            assert image.tags.get("RetainIndefinitely") != "true"
            assert not image.tags.get("ForensicHold")
            assert now - image.creation_date > timedelta(days=60)
            assert mark is not None and mark.due <= now
            for snap in d.snapshot_ids:  # a snapshot goes only if every user goes
                assert all(snap not in i.snapshot_ids or i.image_id in leaving for i in images)
        else:
            assert d.snapshot_ids == ()
        # always mark what the rule says to mark (and only that)
        assert (d.action is Action.MARK) == (eligible and mark is None)
        assert (d.action is Action.UNMARK) == (image.owner_id == ME and not eligible and mark is not None)
        # due and eligible: deregistered now, or deferred when over the (here: huge) cap
        assert (d.action in (Action.DEREGISTER, Action.DEFERRED)) == (eligible and mark is not None and mark.due <= now)
        assert d.action is not Action.DEFERRED  # the cap (10,000) is never reached here
        if image.owner_id != ME:
            assert d.action is Action.KEEP
        # only candidates' usage matters: the run asks AWS about those alone
        if not needs_usage(image, now, POLICY, account_id=ME):
            alone = decide([image], Usage(), now, POLICY, account_id=ME).decisions[0]
            assert alone.action is d.action
        if d.action is Action.MARK:
            written = parse_mark(d.mark_value)
            assert d.mark_value.startswith("Resource does not meet policy: deregister@")
            assert written.op == "deregister"
            assert timedelta(days=7) <= written.due - now < timedelta(days=8)
        assert d.reasons  # every decision says why


@settings(max_examples=200, deadline=None)
@given(backlogs(), st.integers(min_value=0, max_value=6))
def test_the_brake_drains_oldest_due_first(account, cap):
    """Never more than the cap per run; the rest deferred, never dropped; oldest due go first;
    marking and unmarking are not limited by the cap."""
    images, usage = account
    unlimited = decide(images, usage, NOW, POLICY, account_id=ME)
    plan = decide(images, usage, NOW, RetentionPolicy(max_deregistrations_per_run=cap), account_id=ME)
    going, waiting = plan.of(Action.DEREGISTER), plan.of(Action.DEFERRED)
    assert len(going) <= cap
    due = {d.image_id for d in unlimited.of(Action.DEREGISTER)}
    assert {d.image_id for d in going} | {d.image_id for d in waiting} == due
    assert len(going) == min(cap, len(due)) and plan.deferred == len(due) - len(going)
    if going and waiting:
        assert max(d.due for d in going) <= min(d.due for d in waiting)
    for d in waiting:
        assert d.snapshot_ids == () and "deferred" in d.reason
    for action in (Action.MARK, Action.UNMARK):  # never blocked by the brake
        assert {d.image_id for d in plan.of(action)} == {d.image_id for d in unlimited.of(action)}
    leaving = {d.image_id for d in going}
    for d in going:  # a snapshot shared with a deferred image stays
        for snap in d.snapshot_ids:
            assert all(snap not in i.snapshot_ids or i.image_id in leaving for i in images)


@settings(max_examples=100, deadline=None)
@given(backlogs(), st.integers(min_value=1, max_value=5))
def test_a_backlog_drains_in_ceil_due_over_cap_runs(account, cap):
    images, usage = account
    policy = RetentionPolicy(max_deregistrations_per_run=cap)
    due = len(decide(images, usage, NOW, POLICY, account_id=ME).of(Action.DEREGISTER))
    remaining, runs = list(images), 0
    while True:
        plan = decide(remaining, usage, NOW, policy, account_id=ME)
        gone = {d.image_id for d in plan.of(Action.DEREGISTER)}
        if not gone:
            assert plan.deferred == 0
            break
        runs += 1
        remaining = [i for i in remaining if i.image_id not in gone]
    assert runs == math.ceil(due / cap)


# ------------------------------------------------------------------ edge cases


def img(image_id="ami-1", age_days=90.0, tags=None, owner=ME, snaps=()):
    return Image(
        image_id=image_id,
        owner_id=owner,
        creation_date=NOW - timedelta(days=age_days),
        name=image_id,
        tags=tags or {},
        snapshot_ids=tuple(snaps),
    )


def one(image, usage=None, now=NOW, policy=POLICY):
    return decide([image], usage or Usage(), now, policy, account_id=ME).decisions[0]


@pytest.mark.parametrize(
    ("age", "action"),
    [(60, Action.KEEP), (60 - 1 / 24, Action.KEEP), (60 + 1 / 24, Action.MARK), (61, Action.MARK)],
)
def test_sixty_days_boundary(age, action):
    d = one(img(age_days=age))
    assert d.action is action
    if action is Action.KEEP:
        assert d.reason.startswith("too young")


@pytest.mark.parametrize("tag", PROTECT_VARIANTS[1:])
def test_near_miss_protect_tags_do_not_protect(tag):
    assert one(img(tags={tag[0]: tag[1]})).action is Action.MARK


def test_exact_protect_tag_protects_and_unmarks():
    d = one(img(tags={"RetainIndefinitely": "true"}))
    assert d.action is Action.KEEP and "protected by tag RetainIndefinitely=true" in d.reason
    marked = {"RetainIndefinitely": "true", "maid_status": "Resource does not meet policy: deregister@2026/01/01"}
    assert one(img(tags=marked)).action is Action.UNMARK


def test_forensic_hold():
    d = one(img(tags={"ForensicHold": "rel-2026-02-01-web-3"}))
    assert d.action is Action.KEEP and "held: ForensicHold=rel-2026-02-01-web-3" in d.reason
    assert one(img(tags={"ForensicHold": ""})).action is Action.MARK
    no_holds = RetentionPolicy(hold_enabled=False)
    assert one(img(tags={"ForensicHold": "x"}), policy=no_holds).action is Action.MARK


def test_custodian_mark_due_is_honoured():
    past = {"maid_status": "Resource does not meet policy: deregister@2026/02/20"}
    assert one(img(tags=past)).action is Action.DEREGISTER
    future = {"maid_status": "Resource does not meet policy: deregister@2026/03/05 1530 UTC"}
    d = one(img(tags=future))
    assert d.action is Action.KEEP
    assert d.reason == "deregister on 2026-03-05 15:30 UTC if still unused and unprotected then (marked)"
    assert d.deregister_on == datetime(2026, 3, 5, 15, 30, tzinfo=UTC) and d.protections == ()
    other_op = {"maid_status": "Resource does not meet policy: stop@2026/02/20"}
    d = one(img(tags=other_op))
    assert d.action is Action.MARK and "replaces unreadable" in d.reason


def test_mark_due_at_exactly_now_is_due():
    tags = {"maid_status": "Resource does not meet policy: deregister@2026/03/01 1200 UTC"}
    assert one(img(tags=tags)).action is Action.DEREGISTER


def test_marked_image_back_in_use_is_unmarked():
    tags = {"maid_status": "Resource does not meet policy: deregister@2026/02/20"}
    d = one(img(tags=tags), Usage(instances={"ami-1": ["i-0abc"]}))
    assert d.action is Action.UNMARK and "in use by i-0abc" in d.reason


def test_referenced_by_launch_template_is_protected():
    ref = "referenced by launch template lt-0123 v4 (ASG web)"
    d = one(img(), Usage(references={"ami-1": [ref]}))
    assert d.action is Action.KEEP and ref in d.reason


def test_shared_snapshot_stays_unless_both_go():
    due = {"maid_status": "Resource does not meet policy: deregister@2026/02/20"}
    a = img("ami-a", tags=due, snaps=["snap-own-a", "snap-shared"])
    b = img("ami-b", snaps=["snap-shared"])  # not marked yet: stays this run
    plan = decide([a, b], Usage(), NOW, POLICY, account_id=ME)
    da = plan.decisions[0]
    assert da.action is Action.DEREGISTER
    assert da.snapshot_ids == ("snap-own-a",) and da.kept_snapshot_ids == ("snap-shared",)
    assert "shared with ami-b" in da.reason
    b2 = img("ami-b", tags=due, snaps=["snap-shared"])
    plan = decide([a, b2], Usage(), NOW, POLICY, account_id=ME)
    assert set(plan.decisions[0].snapshot_ids) | set(plan.decisions[1].snapshot_ids) == {"snap-own-a", "snap-shared"}


def test_other_accounts_never_touched():
    due = {"maid_status": "Resource does not meet policy: deregister@2026/02/20"}
    d = one(img(owner=OTHER, tags=due))
    assert d.action is Action.KEEP and "another account" in d.reason


def test_unknown_creation_date_is_never_eligible():
    image = Image(image_id="ami-1", owner_id=ME, creation_date=None)
    assert one(image).action is Action.KEEP


def test_cap_defers_the_newest_due():
    images = [
        img(f"ami-{i}", tags={"maid_status": f"Resource does not meet policy: deregister@2026/02/{20 + i}"})
        for i in range(3)
    ]
    plan = decide(images, Usage(), NOW, RetentionPolicy(max_deregistrations_per_run=3), account_id=ME)
    assert len(plan.of(Action.DEREGISTER)) == 3 and plan.deferred == 0
    plan = decide(images, Usage(), NOW, RetentionPolicy(max_deregistrations_per_run=2), account_id=ME)
    assert [d.image_id for d in plan.of(Action.DEREGISTER)] == ["ami-0", "ami-1"]
    (waiting,) = plan.of(Action.DEFERRED)
    assert waiting.image_id == "ami-2" and plan.deferred == 1
    assert waiting.reason.startswith("due since 2026-02-22; deferred to a following run: at most 2")
    assert plan.counts == {"mark": 0, "unmark": 0, "deregister": 2, "deferred": 1, "keep": 0}
    plan = decide(images, Usage(), NOW, RetentionPolicy(max_deregistrations_per_run=0), account_id=ME)
    assert plan.deferred == 3 and not plan.of(Action.DEREGISTER)


def test_naive_now_is_refused():
    with pytest.raises(ValueError):
        decide([], Usage(), datetime(2026, 1, 1), POLICY)


def test_new_marks_count_their_grace_from_when_they_are_written():
    """A run re-executed later decides as of its own date, but the owner still gets 7 days."""
    written = NOW + timedelta(days=10)
    d = decide([img()], Usage(), NOW, POLICY, account_id=ME, marked_at=written).decisions[0]
    assert d.action is Action.MARK and d.due == datetime(2026, 3, 19, tzinfo=UTC)
    assert timedelta(days=7) <= d.due - written < timedelta(days=8)


def test_needs_usage_only_for_candidates():
    assert needs_usage(img(), NOW, POLICY, account_id=ME)
    assert not needs_usage(img(age_days=30), NOW, POLICY, account_id=ME)
    assert not needs_usage(img(tags={"RetainIndefinitely": "true"}), NOW, POLICY, account_id=ME)
    assert not needs_usage(img(tags={"ForensicHold": "x"}), NOW, POLICY, account_id=ME)
    assert not needs_usage(img(owner=OTHER), NOW, POLICY, account_id=ME)
    assert needs_usage(img(tags={"retainindefinitely": "true"}), NOW, POLICY, account_id=ME)  # a near miss
