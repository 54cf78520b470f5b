"""The drop-tolerant synchronizer on generated sensor streams: a scenario table, bounds, determinism, invariants."""
import heapq
import queue
import random
import sys
import threading
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mmseg_ros import modalities
from mmseg_ros.errors import ConfigError, MessageError
from mmseg_ros.sync import InputState, Missing, SyncConfig, Synchronizer, stamp_to_ns

MS = 1_000_000
# Real registry names, taken in registry order rather than spelled out again.
CAMERA, DEPTH, EVENT, LIDAR = list(modalities.REGISTRY)[:4]
SLOP, MAX_WAIT, TIMEOUT, TICK = 25 * MS, 60 * MS, 300 * MS, 5 * MS


def make_sync(names, **overrides) -> Synchronizer:
    options = dict(slop_ns=SLOP, max_wait_ns=MAX_WAIT, silence_timeout_ns=TIMEOUT)
    options.update(overrides)
    return Synchronizer(SyncConfig(tuple(names), **options))


@dataclass
class Stream:
    """A sensor: one message per period, stamped at its nominal time (plus an optional clock offset and jitter)."""

    name: str
    period_ms: int
    latency_ms: int = 10
    end_ms: int = 2000
    off: Callable[[int], bool] = lambda t_ms: False  # nominal times at which the sensor sends nothing
    offset_ms: int = 0
    stamp_jitter_ms: float = 0.0
    latency_jitter_ms: float = 0.0

    def events(self, rng: random.Random):
        for t in range(0, self.end_ms, self.period_ms):
            if self.off(t):
                continue
            stamp = round((t + self.offset_ms + rng.uniform(-1, 1) * self.stamp_jitter_ms) * MS)
            arrival = round((t + self.latency_ms + rng.uniform(0, 1) * self.latency_jitter_ms) * MS)
            yield arrival, self.name, stamp, t


def timeline(streams, seed=0):
    """All messages of all streams in arrival order: (arrival_ns, name, stamp_ns, nominal_ms)."""
    rng = random.Random(seed)
    events = [e for s in streams for e in s.events(rng)]
    return sorted(events, key=lambda e: (e[0], e[1], e[2]))


def drive(sync, events, tail_ms=200):
    """Feed events in the given order, polling every TICK of the caller's clock in between, as a node timer would.

    The tail is shorter than the silence timeout, so the end of the data does not count as every input dying.
    """
    out, last = [], None
    for arrival, name, stamp, nominal in events:
        if last is not None and arrival > last:
            t = (last // TICK + 1) * TICK
            while t < arrival:
                out += sync.poll(t)
                t += TICK
        out += sync.add(name, stamp, (name, nominal), arrival)
        last = arrival
    for t in range(last + TICK, last + tail_ms * MS, TICK):
        out += sync.poll(t)
    return out


def check_accounting(sync):
    for name, c in sync.stats().inputs.items():
        assert c.received == c.used + c.superseded + sum(c.dropped.values()) + c.buffered, (name, c)


def check_order_and_slop(sets):
    stamps = [s.stamp_ns for s in sets]
    assert stamps == sorted(set(stamps)), "sets must come in strictly increasing anchor stamp"
    for s in sets:
        assert s.anchor in s.messages
        for name, msg in s.messages.items():
            assert abs(msg.stamp_ns - s.stamp_ns) <= SLOP, (s, name)


def arrival_of(events, name, nominal):
    return next(e[0] for e in events if e[1] == name and e[3] == nominal)


# ----------------------------------------------------------------------------------------------- scenario table
@dataclass
class Scenario:
    id: str
    names: Tuple[str, ...]
    streams: List[Stream]
    expect: Callable
    options: Dict = field(default_factory=dict)
    edit: Optional[Callable] = None  # rewrites the arrival-ordered event list (reordering, duplicates, loops)


def expect_all_present(sets, sync, events):
    assert [s.stamp_ns for s in sets] == [t * MS for t in range(0, 2000, 100)]
    for s in sets:
        assert s.complete and s.anchor == CAMERA
        assert all(m.stamp_ns == s.stamp_ns for m in s.messages.values())
        # emitted the moment the slowest input (35 ms latency) came in, well before max_wait (60 ms)
        assert s.emitted_ns - s.messages[CAMERA].arrival_ns == 30 * MS
    stats = sync.stats()
    assert stats.sets_emitted == 20 and all(c.used == c.received == 20 for c in stats.inputs.values())


def expect_one_silent(sets, sync, events):
    assert [s.stamp_ns for s in sets] == [t * MS for t in range(0, 3000, 100)], "sets must keep coming"
    for s in sets:
        latency = s.emitted_ns - s.messages[CAMERA].arrival_ns
        assert latency <= MAX_WAIT + TICK
        t = s.stamp_ns // MS
        if t < 1000:
            assert s.complete
        else:  # lidar's last message: stamp 900 arriving at 935 ms; silent once 300 ms passed without any
            expected = Missing.OUT_OF_SLOP if s.emitted_ns - 935 * MS <= TIMEOUT else Missing.SILENT
            assert s.missing == {LIDAR: expected}, s
        if t >= 1300:  # a silent input is not waited for: out as soon as depth (15 ms latency) is in
            assert latency == 10 * MS
    assert sum(s.missing.get(LIDAR) == Missing.SILENT for s in sets) == 18
    status = sync.status(3000 * MS)
    assert status[LIDAR].state == InputState.MISSING and status[CAMERA].state == InputState.OK
    assert sync.stats().inputs[LIDAR].missing == {"silent": 18, "stale": 0, "out_of_slop": 2}


def expect_anchor_silent(sets, sync, events):
    check_order_and_slop(sets)
    anchors = [(s.anchor, s.stamp_ns // MS) for s in sets]
    assert [t for a, t in anchors if a == CAMERA] == list(range(0, 1050, 100)) + list(range(2000, 3000, 100))
    lidar_anchored = [t for a, t in anchors if a == LIDAR]
    assert lidar_anchored == list(range(1050, 2000, 50)), "the fallback covers the whole outage"
    for s in sets:
        if s.anchor == LIDAR:
            # until the camera's first frame back (stamp 2000, arriving at 2005 ms) it counts as silent
            camera = Missing.SILENT if s.emitted_ns < arrival_of(events, CAMERA, 2000) else Missing.OUT_OF_SLOP
            depth_expected = s.stamp_ns % (100 * MS) == 0  # depth runs at 10 Hz, the fallback LiDAR at 20 Hz
            assert s.missing == ({CAMERA: camera} if depth_expected else {CAMERA: camera, DEPTH: Missing.OUT_OF_SLOP})
    gaps = [b.stamp_ns - a.stamp_ns for a, b in zip(sets, sets[1:])]
    assert max(gaps) <= 100 * MS
    stats = sync.stats()
    assert stats.anchor_switches == 2 and stats.sets_replaced <= 1
    assert sync.anchor == CAMERA


def expect_hand_back(sets, sync, events):
    """The camera's first frame back (1540 ms) finds the LiDAR set of the same instant still waiting for depth
    (50 ms latency): that set is given up, the camera's set takes the instant, nothing is emitted twice."""
    check_order_and_slop(sets)
    anchors = [(s.anchor, s.stamp_ns // MS) for s in sets]
    assert anchors == ([(CAMERA, t) for t in range(0, 500, 100)] + [(LIDAR, t) for t in range(500, 1500, 100)]
                       + [(CAMERA, t) for t in range(1500, 2500, 100)])
    assert sync.stats().sets_replaced == 1 and sync.stats().anchor_switches == 2
    back = next(s for s in sets if s.stamp_ns == 1500 * MS)
    assert back.complete and back.emitted_ns == arrival_of(events, DEPTH, 1500)


def expect_mixed_rates(sets, sync, events):
    assert [s.stamp_ns for s in sets] == [t * MS for t in range(0, 2000, 100)]
    for s in sets:
        assert s.messages[LIDAR].stamp_ns == s.stamp_ns
        if s.stamp_ns % (200 * MS) == 0:
            assert s.complete and s.messages[EVENT].stamp_ns == s.stamp_ns
        else:  # events at 5 Hz are 100 ms away from every other camera frame: out of the 25 ms slop
            assert s.missing == {EVENT: Missing.OUT_OF_SLOP}
            assert s.emitted_ns >= s.messages[CAMERA].arrival_ns + MAX_WAIT
    lidar = sync.stats().inputs[LIDAR]
    assert lidar.received == 40 and lidar.used == 20 and lidar.superseded + lidar.buffered == 20
    assert sync.stats().inputs[EVENT].used == 10


def expect_jitter(sets, sync, events):
    check_order_and_slop(sets)
    assert len(sets) == 20
    for s in sets:  # each input matched with its own message of the same instant, not a neighbour
        assert s.complete
        nominal = s.messages[CAMERA].payload[1]
        assert all(m.payload[1] == nominal for m in s.messages.values())


def expect_out_of_order(sets, sync, events):
    check_order_and_slop(sets)
    assert len(sets) == 20 and sync.stats().inputs[CAMERA].dropped["late"] == 0
    for s in sets:
        assert s.complete and s.messages[LIDAR].stamp_ns == s.stamp_ns, "reordered lidar still matched exactly"


def expect_duplicates(sets, sync, events):
    assert [(s.stamp_ns, s.present) for s in sets] == [(t * MS, (CAMERA, DEPTH, LIDAR)) for t in range(0, 2000, 100)]
    inputs = sync.stats().inputs
    assert inputs[CAMERA].dropped["duplicate"] == 20 and inputs[LIDAR].dropped["duplicate"] == 40
    assert inputs[DEPTH].dropped["duplicate"] == 0 and inputs[LIDAR].used == 20


def expect_one_reset(sets, sync, events):
    stats = sync.stats()
    assert stats.resets == 1
    stamps = [s.stamp_ns // MS for s in sets]
    restart = next(i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1])
    assert stamps[:restart] == list(range(0, 2000, 100)) and stamps[restart:] == list(range(0, 2000, 100))
    assert all(s.complete for s in sets) and sync.status(sets[-1].emitted_ns)[CAMERA].state == InputState.OK


def expect_min_modalities(sets, sync, events):
    assert [s.stamp_ns // MS for s in sets] == list(range(0, 2000, 200))
    assert all(s.complete for s in sets)
    stats = sync.stats()
    assert stats.sets_emitted == 10 and stats.sets_below_min == 10
    assert stats.inputs[CAMERA].dropped["below_min"] == 10


def expect_stale(sets, sync, events):
    assert len(sets) == 20 and all(s.missing == {DEPTH: Missing.STALE} for s in sets)
    assert sync.status(2000 * MS)[DEPTH].state == InputState.STALE


def overtaken_pairs(name):
    """Of each pair of consecutive messages of `name`, the first is held up until just after the second."""
    def edit(events):
        own = [e for e in events if e[1] == name]
        late = {first: (second[0] + MS, *first[1:]) for first, second in zip(own[::2], own[1::2])}
        return sorted((late.get(e, e) for e in events), key=lambda e: (e[0], e[1], e[2]))
    return edit


def duplicated(*names):
    def edit(events):
        copies = [(e[0] + 2 * MS, *e[1:]) for e in events if e[1] in names]
        return sorted(events + copies, key=lambda e: (e[0], e[1], e[2]))
    return edit


def looped(sim_time):
    def edit(events):  # a bag played twice: stamps restart; with sim time the arrival clock restarts as well
        shift = 0 if sim_time else events[-1][0] + 50 * MS
        return events + [(e[0] + shift, *e[1:]) for e in events]
    return edit


SCENARIOS = [
    Scenario("all_present", (CAMERA, DEPTH, EVENT, LIDAR),
             [Stream(CAMERA, 100, 5), Stream(DEPTH, 100, 15), Stream(EVENT, 100, 25), Stream(LIDAR, 100, 35)],
             expect_all_present),
    Scenario("one_input_silent", (CAMERA, DEPTH, LIDAR),
             [Stream(CAMERA, 100, 5, 3000), Stream(DEPTH, 100, 15, 3000),
              Stream(LIDAR, 100, 35, 3000, off=lambda t: t >= 1000)], expect_one_silent),
    Scenario("anchor_silent", (CAMERA, DEPTH, LIDAR),
             [Stream(CAMERA, 100, 5, 3000, off=lambda t: 1050 <= t < 2000), Stream(DEPTH, 100, 15, 3000),
              Stream(LIDAR, 50, 20, 3000)], expect_anchor_silent, dict(fallback=(LIDAR, DEPTH))),
    Scenario("anchor_hand_back_replaces_waiting_set", (CAMERA, DEPTH, LIDAR),
             [Stream(CAMERA, 100, 40, 2500, off=lambda t: 500 <= t < 1500), Stream(DEPTH, 100, 50, 2500),
              Stream(LIDAR, 100, 10, 2500)], expect_hand_back, dict(fallback=(LIDAR,))),
    Scenario("camera10_lidar20_event5", (CAMERA, EVENT, LIDAR),
             [Stream(CAMERA, 100, 5), Stream(LIDAR, 50, 20), Stream(EVENT, 200, 12)], expect_mixed_rates),
    Scenario("jitter", (CAMERA, DEPTH, EVENT, LIDAR),
             [Stream(CAMERA, 100, 5, stamp_jitter_ms=8, latency_jitter_ms=20),
              Stream(DEPTH, 100, 10, stamp_jitter_ms=8, latency_jitter_ms=30),
              Stream(EVENT, 100, 5, stamp_jitter_ms=8, latency_jitter_ms=30),
              Stream(LIDAR, 50, 10, stamp_jitter_ms=8, latency_jitter_ms=40)], expect_jitter),
    Scenario("out_of_order", (CAMERA, LIDAR), [Stream(CAMERA, 100, 5), Stream(LIDAR, 50, 10)],
             expect_out_of_order, edit=lambda ev: overtaken_pairs(CAMERA)(overtaken_pairs(LIDAR)(ev))),
    Scenario("duplicates", (CAMERA, DEPTH, LIDAR), [Stream(CAMERA, 100, 5), Stream(DEPTH, 100, 8),
                                                    Stream(LIDAR, 50, 12)],
             expect_duplicates, edit=duplicated(CAMERA, LIDAR)),
    Scenario("clock_jump_back_bag_loop", (CAMERA, LIDAR), [Stream(CAMERA, 100, 5), Stream(LIDAR, 50, 12)],
             expect_one_reset, edit=looped(sim_time=False)),
    Scenario("clock_jump_back_sim_time", (CAMERA, LIDAR), [Stream(CAMERA, 100, 5), Stream(LIDAR, 50, 12)],
             expect_one_reset, edit=looped(sim_time=True)),
    Scenario("min_modalities", (CAMERA, DEPTH, LIDAR),
             [Stream(CAMERA, 100, 5), Stream(DEPTH, 100, 8, off=lambda t: t % 200 == 100), Stream(LIDAR, 100, 9)],
             expect_min_modalities, dict(min_modalities=3)),
    Scenario("lagging_clock_is_stale", (CAMERA, DEPTH), [Stream(CAMERA, 100, 5), Stream(DEPTH, 100, 8, offset_ms=-400)],
             expect_stale),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(scenario):
    events = timeline(scenario.streams, seed=1)
    if scenario.edit:
        events = scenario.edit(events)
    sync = make_sync(scenario.names, **scenario.options)
    sets = drive(sync, events)
    scenario.expect(sets, sync, events)
    check_accounting(sync)
    assert sync.stats().sets_emitted == len(sets) and sync.stats().pending == 0


# ----------------------------------------------------------------------------------------------- bounds
def long_run(count, seed=3):
    """`count` messages of four sensors over ~40 simulated minutes, with regular outages of camera and LiDAR."""
    rng = random.Random(seed)

    def sensor(name, period_ms, latency_ms, outage):
        t = 0
        while True:
            if not outage(t):
                yield (t + latency_ms + rng.randrange(10)) * MS, name, (t + rng.randrange(-3, 4)) * MS, t
            t += period_ms

    streams = [sensor(CAMERA, 100, 5, lambda t: t % 300_000 >= 295_000),
               sensor(DEPTH, 100, 8, lambda t: False),
               sensor(EVENT, 200, 4, lambda t: False),
               sensor(LIDAR, 50, 12, lambda t: t % 100_000 >= 90_000)]
    merged = heapq.merge(*streams)
    return (next(merged) for _ in range(count))


def test_100k_messages_bounded_memory():
    buffer_size = 16
    sync = make_sync((CAMERA, DEPTH, EVENT, LIDAR), buffer_size=buffer_size, fallback=(LIDAR, DEPTH))
    emitted = 0
    last_poll = 0
    for i, (arrival, name, stamp, nominal) in enumerate(long_run(100_000)):
        if arrival - last_poll >= 20 * MS:
            emitted += len(sync.poll(arrival))
            last_poll = arrival
        emitted += len(sync.add(name, stamp, None, arrival))
        if i == 10_000:  # warmed up: every buffer has filled once
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
        if i == 30_000:  # a leak of even a few bytes per message would show over 20k messages
            growth = tracemalloc.get_traced_memory()[0] - baseline
            tracemalloc.stop()
            assert growth < 16 * 1024, f"synchronizer state grew by {growth} bytes over 20k messages"
        if i % 5_000 == 0:
            assert all(s.buffered <= buffer_size for s in sync.status(arrival).values())
            assert sync.stats().pending <= buffer_size
    stats = sync.stats()
    assert emitted == stats.sets_emitted > 20_000
    assert stats.anchor_switches >= 2 * 7, "the camera outages every 5 minutes hand the anchor over and back"
    assert stats.inputs[LIDAR].missing["silent"] > 0
    check_accounting(sync)


def test_waiting_sets_bounded_when_never_complete():
    """With an hour-long max_wait and a live input that never matches, sets are forced out rather than piling up."""
    sync = make_sync((CAMERA, LIDAR), max_wait_ns=3600 * 1000 * MS, buffer_size=8)
    out = []
    for k in range(100):
        t = k * 100 * MS
        out += sync.add(LIDAR, t + 40 * MS, None, t)  # 40 ms off: outside the 25 ms slop
        out += sync.add(CAMERA, t, k, t)
        assert sync.stats().pending <= 8
    stats = sync.stats()
    assert stats.sets_forced == len(out) == 100 - stats.pending
    assert [s.messages[CAMERA].payload for s in out] == list(range(len(out)))
    assert all(s.missing == {LIDAR: Missing.OUT_OF_SLOP} for s in out)
    check_accounting(sync)


# ----------------------------------------------------------------------------------------------- determinism
def summary(sets):
    return [(s.seq, s.anchor, s.stamp_ns, s.present, tuple(s.missing.items()), s.emitted_ns,
             tuple((n, m.stamp_ns) for n, m in s.messages.items())) for s in sets]


def test_determinism():
    jitter = next(s for s in SCENARIOS if s.id == "jitter")

    def run(seed):
        sync = make_sync(jitter.names)
        return summary(drive(sync, timeline(jitter.streams, seed=seed))), sync.stats().as_dict()

    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0], "the summary must be sensitive to the input"


# ----------------------------------------------------------------------------------------------- invariants
@settings(max_examples=60, deadline=None)
@given(
    n_inputs=st.integers(1, 5),
    min_modalities=st.integers(1, 5),
    messages=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3000), st.integers(0, 150), st.booleans()),
                      max_size=200),
)
def test_invariants(n_inputs, min_modalities, messages):
    """Any number of inputs, any arrival pattern: ordered, within slop, and every message accounted for."""
    names = tuple(f"in{i}" for i in range(n_inputs))
    sync = make_sync(names, min_modalities=min(min_modalities, n_inputs), buffer_size=8)
    events = []
    for which, t_ms, delay_ms, duplicate in messages:
        name = names[which % n_inputs]
        events.append(((t_ms + delay_ms) * MS, name, t_ms * MS, t_ms))
        if duplicate:
            events.append(((t_ms + delay_ms + 1) * MS, name, t_ms * MS, t_ms))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    if not events:
        return
    sets = drive(sync, events)
    check_order_and_slop(sets)
    check_accounting(sync)
    stats = sync.stats()
    assert stats.resets == 0 and stats.sets_emitted == len(sets) and stats.pending == 0
    for s in sets:
        assert set(s.messages) | set(s.missing) == set(names) and not set(s.messages) & set(s.missing)
        assert len(s.messages) >= min(min_modalities, n_inputs)
    received = sum(c.received for c in stats.inputs.values())
    assert received == len(events)


# ----------------------------------------------------------------------------------------------- early settling
class WaitingSynchronizer(Synchronizer):
    """The policy before period prediction, as the reference: an input holds its set back until it has a match and
    has delivered a stamp at or after the anchor's (or max_wait runs out)."""

    def _input_settled(self, inp, stamp, predict=True):
        return self._nearest(inp, stamp) is not None and inp.newest >= stamp


def formed(sets):
    """What a run formed: per set its anchor, stamp and the stamp of every message in it (not when it came out)."""
    return [(s.anchor, s.stamp_ns, tuple((n, m.stamp_ns) for n, m in s.messages.items())) for s in sets]


def test_a_match_just_before_the_anchor_is_not_waited_on_for_a_period():
    """Depth stamped 1 ms before the camera (the same instant, clock jitter): once its period is known, the set goes
    out when the depth image arrives, not when the next depth (100 ms later) or max_wait comes."""
    streams = [Stream(CAMERA, 100, 5), Stream(DEPTH, 100, 8, offset_ms=-1), Stream(LIDAR, 100, 20, offset_ms=10)]
    events = timeline(streams)
    early = drive(make_sync((CAMERA, DEPTH, LIDAR)), events)
    waiting = drive(WaitingSynchronizer(make_sync((CAMERA, DEPTH, LIDAR)).config), events)
    assert formed(early) == formed(waiting) and len(early) == 20 and all(s.complete for s in early)
    last_arrival = [max(m.arrival_ns for m in s.messages.values()) for s in early]
    assert [s.emitted_ns for s in early[4:]] == last_arrival[4:], "out with the last input once periods are known"
    assert all(s.emitted_ns - s.messages[CAMERA].arrival_ns == MAX_WAIT for s in waiting[1:])
    assert all(s.emitted_ns <= w.emitted_ns for s, w in zip(early, waiting))


def test_prediction_waits_for_an_input_that_reorders():
    """After a message older than its newest, an input is waited for as before (its stamp steps no longer tell its
    period) until it has shown its period again in order."""
    def run(depth_order):
        sync = make_sync((CAMERA, DEPTH))
        out = []
        for t in range(0, 400, 100):
            out += sync.add(DEPTH, t * MS, None, (t + 8) * MS)
            out += sync.add(CAMERA, t * MS, None, (t + 5) * MS)
        for t in depth_order:
            out += sync.add(DEPTH, t * MS, None, (508 + depth_order.index(t)) * MS)
        out += sync.add(CAMERA, 510 * MS, None, 515 * MS)
        return out, sync.poll(575 * MS)

    emitted, later = run([400, 500])  # in order: depth 500 matches camera 510 and depth 600 cannot come nearer
    assert emitted[-1].stamp_ns == 510 * MS and emitted[-1].messages[DEPTH].stamp_ns == 500 * MS and not later
    emitted, later = run([500, 400])  # 400 after 500: waited for until max_wait (60 ms after the camera's 515)
    assert all(s.stamp_ns < 510 * MS for s in emitted)
    assert [(s.stamp_ns, s.messages[DEPTH].stamp_ns) for s in later] == [(510 * MS, 500 * MS)]


stream_params = st.tuples(
    st.sampled_from([20, 25, 33, 50, 100, 200]),  # period ms
    st.integers(0, 99),  # phase offset, % of the period
    st.integers(1, 120),  # latency ms: beyond max_wait (60) is a late input
    st.integers(0, 10),  # latency jitter ms
    st.booleans(),  # goes silent for a stretch
)


@settings(max_examples=40, deadline=None)
@given(others=st.lists(stream_params, min_size=1, max_size=3), anchor_period=st.sampled_from([50, 100]),
       seed=st.integers(0, 1000))
# A depth sensor coming back from an outage with 55 ms latency while events are waited for: it joins the set.
@example(others=[(25, 0, 55, 1, True), (33, 0, 1, 0, False)], anchor_period=50, seed=0)
def test_early_settling_forms_the_same_sets(others, anchor_period, seed):
    """Any steady inputs (stamp jitter within what the prediction allows), on time, late or going silent: the same
    arrival sequence forms the same sets with and without settling on a predicted period, never emitted later."""
    names = list(modalities.REGISTRY)[:1 + len(others)]
    streams = [Stream(names[0], anchor_period, 5, stamp_jitter_ms=anchor_period / 20)]
    for name, (period, phase, latency, latency_jitter, outage) in zip(names[1:], others):
        off = (lambda t: 600 <= t < 1400) if outage else (lambda t: False)
        streams.append(Stream(name, period, latency, off=off, offset_ms=period * phase // 100,
                              stamp_jitter_ms=period / 15, latency_jitter_ms=latency_jitter))
    events = timeline(streams, seed=seed)
    early = drive(make_sync(names), events)
    waiting = drive(WaitingSynchronizer(make_sync(names).config), events)
    assert formed(early) == formed(waiting)
    assert all(s.emitted_ns <= w.emitted_ns for s, w in zip(early, waiting))


# ----------------------------------------------------------------------------------------------- API edges
def test_status_rates_and_anchor():
    sync = make_sync((CAMERA, LIDAR))
    drive(sync, timeline([Stream(CAMERA, 100, 5), Stream(LIDAR, 50, 12)]), tail_ms=10)
    status = sync.status(1990 * MS)
    assert status[CAMERA].rate_hz == pytest.approx(10.0) and status[LIDAR].rate_hz == pytest.approx(20.0)
    assert status[CAMERA].is_anchor and not status[LIDAR].is_anchor
    assert status[LIDAR].last_stamp_ns == 1950 * MS and status[LIDAR].last_arrival_ns == 1962 * MS
    assert all(s.state == InputState.OK for s in status.values())


def test_reset_counts_held_messages():
    sync = make_sync((CAMERA, LIDAR))
    sync.add(LIDAR, 0, None, 0)
    sync.add(LIDAR, 50 * MS, None, 50 * MS)
    sync.reset()
    stats = sync.stats()
    assert stats.resets == 1 and stats.inputs[LIDAR].dropped["reset"] == 2 and stats.inputs[LIDAR].buffered == 0


def test_frame_overtaken_by_an_emitted_set_is_dropped_late():
    sync = make_sync((CAMERA, LIDAR))
    assert sync.add(LIDAR, 100 * MS, None, 100 * MS) == []
    assert [s.stamp_ns for s in sync.add(CAMERA, 100 * MS, None, 101 * MS)] == [100 * MS]
    assert sync.add(CAMERA, 0, None, 102 * MS) == []  # older than the emitted set by more than slop
    assert sync.stats().inputs[CAMERA].dropped["late"] == 1
    check_accounting(sync)


def test_thread_safe_under_concurrent_callers():
    """Three callback threads share one time-ordered feed; the lock keeps the state consistent.

    A thread preempted while holding an event delivers it "late" by many simulated seconds (the feed runs far
    faster than real time), so clock-jump detection is switched off here: it would reset on such stragglers.
    """
    sync = make_sync((CAMERA, DEPTH, LIDAR), jump_threshold_ns=10**15)
    feed = queue.Queue()
    for event in timeline([Stream(CAMERA, 100, 5, 60_000), Stream(DEPTH, 100, 8, 60_000),
                           Stream(LIDAR, 50, 12, 60_000)]):
        feed.put(event)
    got, got_lock = [], threading.Lock()

    def callback_thread():
        while True:
            try:
                arrival, name, stamp, nominal = feed.get_nowait()
            except queue.Empty:
                return
            ready = sync.add(name, stamp, nominal, arrival) + sync.poll(arrival)
            with got_lock:
                got.extend(ready)

    threads = [threading.Thread(target=callback_thread) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got.extend(sync.poll(61_000 * MS))
    check_accounting(sync)
    stats = sync.stats()
    assert stats.sets_emitted == len(got) > 300 and stats.resets == 0
    assert sorted(s.seq for s in got) == list(range(len(got)))
    assert sorted({s.stamp_ns for s in got}) == sorted(s.stamp_ns for s in got)
    assert all(abs(m.stamp_ns - s.stamp_ns) <= SLOP for s in got for m in s.messages.values())


@pytest.mark.parametrize("options, field_name", [
    (dict(anchor="nope"), "anchor"), (dict(fallback=(CAMERA,)), "fallback"), (dict(slop_ns=-1), "slop_ns"),
    (dict(min_modalities=3), "min_modalities"), (dict(buffer_size=1), "buffer_size"),
    (dict(max_wait_ns=0.1), "max_wait_ns"),
])
def test_bad_config_names_the_field(options, field_name):
    with pytest.raises(ConfigError, match=field_name):
        SyncConfig((CAMERA, LIDAR), **options)


def test_nearest_within_slop_wins_and_ties_go_to_the_newer():
    sync = make_sync((CAMERA, LIDAR))
    for stamp_ms in (80, 95, 118, 200, 310, 290):
        sync.add(LIDAR, stamp_ms * MS, stamp_ms, stamp_ms * MS)
    (first,) = sync.add(CAMERA, 100 * MS, None, 320 * MS)
    (second,) = sync.add(CAMERA, 300 * MS, None, 321 * MS)
    assert first.messages[LIDAR].payload == 95 and second.messages[LIDAR].payload == 310
    check_accounting(sync)


def test_short_loop_needs_an_explicit_reset():
    """A 0.5 s bag looped: the jump is under jump_threshold, so the replay resets, and the loop syncs again."""
    events = timeline([Stream(CAMERA, 100, 5, 500), Stream(LIDAR, 50, 12, 500)])
    sync = make_sync((CAMERA, LIDAR))
    first = drive(sync, events)
    assert len(drive(sync, events)) == 0 and sync.stats().inputs[CAMERA].dropped["late"] > 0
    sync.reset()
    again = drive(sync, events)
    assert summary(again)[0][1:] == summary(first)[0][1:] and len(again) == len(first) == 5
    assert sync.stats().resets == 1


def test_stamp_conversions():
    stamp = type("Time", (), {"sec": 12, "nanosec": 345})()
    assert stamp_to_ns(stamp) == 12 * 10**9 + 345
    with pytest.raises(MessageError, match="sec"):
        stamp_to_ns(object())
    sync = make_sync((CAMERA,))
    numpy = pytest.importorskip("numpy")
    (only,) = sync.add(CAMERA, numpy.int64(5), "payload", numpy.int64(7))
    assert type(only.stamp_ns) is int and only.stamp_ns == 5 and only.messages[CAMERA].payload == "payload"


def test_bad_calls_raise_project_errors():
    sync = make_sync((CAMERA, LIDAR))
    with pytest.raises(MessageError, match="stamp_ns"):
        sync.add(CAMERA, 0.5, None, 0)
    with pytest.raises(MessageError, match="now_ns"):
        sync.poll(1.0)
    with pytest.raises(ConfigError, match=DEPTH):
        sync.add(DEPTH, 0, None, 0)
    with pytest.raises(ConfigError, match="modalities"):
        SyncConfig(())
    assert SyncConfig.from_seconds([CAMERA, LIDAR], slop=0.02).slop_ns == 20 * MS


def test_imports_no_ros():
    import subprocess

    code = "import sys, mmseg_ros.sync; assert 'rclpy' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
