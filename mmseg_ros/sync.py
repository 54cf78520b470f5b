"""Drop-tolerant multi-input synchronizer: one set per anchor message, with whatever other inputs came in time.

Time. Every time is an int of nanoseconds: message stamps (`stamp_ns`, e.g. header.stamp.sec * 10**9 + nanosec)
and arrival times (`now_ns`, the caller's clock: ROS time, sim time or a bag's receive time). The synchronizer never
reads a clock itself, so the same input sequence always gives the same output, live or in a replay.

Policy. The anchor input (by default the first configured) sets the output rate: each anchor message opens a set.
For every other input the set takes the message whose stamp is nearest to the anchor stamp within `slop`
(ties go to the newer message; one message may serve several sets). A set is emitted as soon as it is settled
(every live input has a match and no nearer message can follow: it has delivered a stamp at or after the anchor
stamp, or its next stamp, predicted from its period, would be farther from the anchor stamp than the match; a silent
input is not waited for; while any input is silent nothing is predicted, since it may come back during the wait
and join) or once `max_wait` has passed since the anchor message arrived. The prediction assumes an
input's next stamp comes at least PERIOD_SHARE of its shortest recent stamp interval after its newest one (a steady
sensor delivering in order); an input predicts only after MIN_INTERVALS in-order intervals, and a message older than
its newest (reordering) starts that count again, so a reordering input is waited for as before. The early emission
changes when a set is emitted, not which messages it holds. Inputs without a
match are listed as missing with a reason (`Missing`): SILENT (nothing arrived for `silence_timeout`), STALE
(arriving, but its newest stamp is more than `silence_timeout` behind the anchor stamp) or OUT_OF_SLOP (it
delivers, just nothing within `slop`). Sets are emitted in increasing anchor stamp; a set with fewer than
`min_modalities` inputs present is dropped and counted. If the anchor delivers nothing for `silence_timeout`, the
first live input of the fallback order takes over (sets are also opened for its messages of the dead interval
still held); when a higher-priority input delivers again it takes the role back, and waiting sets of the old anchor
at or after its first stamp (minus `slop`) are given up (counted as replaced): the new anchor's set covers that
time, so no instant is emitted twice.

Robustness. Per input at most `buffer_size` messages are held (oldest dropped and counted beyond that); a waiting
set whose anchor message would be pushed out is emitted early instead (counted as forced), so at most `buffer_size`
sets wait per input that has been anchor. Messages are kept sorted by stamp, so moderate
reordering is fine; a message whose stamp is already behind the emitted sets by more than `slop` is dropped as
late; an exact duplicate stamp is dropped. A stamp more than `jump_threshold` behind its input's newest stamp, or
`now_ns` going back by more than that, is a clock jump (bag loop, sim restart): all state is cleared and counted.
A loop shorter than `jump_threshold` is not recognised (its messages would all be late): a replay that loops a
short bag calls `reset()` at each restart.

Accounting. Every received message ends up, exactly once, as used (in an emitted set), superseded (aged out of the
matching window unused: the normal fate of a faster input's extra messages) or dropped with a reason (`Drop`);
until then it is counted as buffered. Per input: received == used + superseded + sum(dropped) + buffered.

API (thread-safe: every public method takes an internal lock, so subscription callbacks and a worker/timer thread
may call it concurrently; payloads are stored and handed back untouched, never copied):

    config = SyncConfig.from_seconds(modalities.canonical(names), slop=0.05, max_wait=0.1, silence_timeout=0.5)
    sync = Synchronizer(config)
    ready = sync.add(name, stamp_to_ns(msg.header.stamp), msg, now_ns)  # -> [SyncSet] now ready, oldest first
    ready = sync.poll(now_ns)   # the same for sets whose max_wait ran out: call it periodically (e.g. a 10 ms timer)
    sync.stats()                # -> SyncStats snapshot, per input and totals; as_dict() for diagnostics and reports
    sync.status(now_ns)         # -> {name: InputStatus}: ok / stale / missing, last stamp and arrival, rate
    sync.anchor                 # the input acting as anchor now
    sync.reset()                # forget all state (counted), e.g. when the node sees its clock jump
"""
from __future__ import annotations

import bisect
import enum
import numbers
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ConfigError, MessageError

NS_PER_S = 1_000_000_000
RATE_WINDOW = 16  # arrivals kept per input for its rate estimate: enough to smooth jitter, small to follow changes
MIN_INTERVALS = 3  # stamp intervals an input must show before its next stamp is predicted
# The next stamp is assumed at least this share of the shortest recent interval after the newest. With stamps at
# period P +- jitter J, intervals lie in [P - 2J, P + 2J]: P - 2J >= 0.75 (P + 2J) holds for J <= P / 14 (7 ms at
# 10 Hz), whatever the recent intervals were; a sensor that speeds up by more than a quarter is mispredicted once.
PERIOD_SHARE = 0.75


def seconds_to_ns(seconds: float) -> int:
    """Seconds (as in parameter files) to the int nanoseconds used everywhere in this module."""
    return int(round(float(seconds) * NS_PER_S))


def stamp_to_ns(stamp: Any) -> int:
    """A ROS time (anything with `sec` and `nanosec`, e.g. header.stamp) as int nanoseconds."""
    try:
        return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: an inf float
        raise MessageError(f"stamp must have integer sec and nanosec, got {stamp!r}: {exc}") from None


class Missing(str, enum.Enum):
    """Why an input is absent from a set."""

    SILENT = "silent"
    STALE = "stale"
    OUT_OF_SLOP = "out_of_slop"


class Drop(str, enum.Enum):
    """Why a received message was discarded without being used."""

    DUPLICATE = "duplicate"  # same stamp as a message of that input already held
    LATE = "late"  # stamp behind the emitted sets by more than slop: no set can use it any more
    OVERFLOW = "overflow"  # pushed out of a full buffer
    RESET = "reset"  # held when the state was cleared (clock jump or reset())
    BELOW_MIN = "below_min"  # anchor of a set with fewer than min_modalities inputs present


class InputState(str, enum.Enum):
    OK = "ok"
    STALE = "stale"
    MISSING = "missing"


@dataclass(frozen=True)
class SyncConfig:
    """What to synchronize and how tolerant to be. Names are the caller's (normally the modality registry's)."""

    modalities: Tuple[str, ...]
    anchor: Optional[str] = None  # None: the first of `modalities`
    fallback: Optional[Tuple[str, ...]] = None  # anchor succession; None: the other modalities in configured order
    slop_ns: int = 50_000_000
    max_wait_ns: int = 100_000_000
    silence_timeout_ns: int = 500_000_000
    min_modalities: int = 1
    buffer_size: int = 64
    jump_threshold_ns: int = NS_PER_S

    def __post_init__(self):
        names = tuple(self.modalities) if isinstance(self.modalities, (list, tuple)) else None
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"sync modalities must be a non-empty list of names, got {self.modalities!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"sync modalities lists a name twice: {list(names)}")
        anchor = names[0] if self.anchor is None else self.anchor
        if anchor not in names:
            raise ConfigError(f"sync anchor {anchor!r} is not one of the modalities {list(names)}")
        fallback = tuple(n for n in names if n != anchor) if self.fallback is None else tuple(self.fallback)
        unknown = [n for n in fallback if n not in names or n == anchor]
        if unknown or len(set(fallback)) != len(fallback):
            raise ConfigError(f"sync fallback {list(fallback)} must list distinct modalities other than the anchor "
                              f"{anchor!r} (modalities: {list(names)})")
        for key, low in (("slop_ns", 0), ("max_wait_ns", 0), ("silence_timeout_ns", 1), ("jump_threshold_ns", 1),
                         ("min_modalities", 1), ("buffer_size", 2)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"sync {key} must be an int >= {low}, got {value!r}")
        if self.min_modalities > len(names):
            raise ConfigError(f"sync min_modalities={self.min_modalities} exceeds the {len(names)} modalities")
        object.__setattr__(self, "modalities", names)
        object.__setattr__(self, "anchor", anchor)
        object.__setattr__(self, "fallback", fallback)

    @classmethod
    def from_seconds(cls, modalities: Sequence[str], *, slop: float = 0.05, max_wait: float = 0.1,
                     silence_timeout: float = 0.5, jump_threshold: float = 1.0, **rest: Any) -> "SyncConfig":
        """Build from times in seconds (as parameter files and ROS parameters give them)."""
        try:
            times = {name: seconds_to_ns(value) for name, value in (
                ("slop_ns", slop), ("max_wait_ns", max_wait),
                ("silence_timeout_ns", silence_timeout), ("jump_threshold_ns", jump_threshold))}
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"sync times must be numbers of seconds: {exc}") from None
        return cls(tuple(modalities), **times, **rest)

    @property
    def priority(self) -> Tuple[str, ...]:
        """Anchor first, then the fallback order."""
        return (self.anchor, *self.fallback)


@dataclass(frozen=True, slots=True)
class Message:
    stamp_ns: int
    payload: Any
    arrival_ns: int


@dataclass(frozen=True, slots=True)
class SyncSet:
    """One synchronized set: the anchor message and the matched messages of the other inputs."""

    seq: int  # 0, 1, 2, ... over the synchronizer's life (resets included)
    anchor: str
    stamp_ns: int  # the anchor message's stamp: the set's time
    messages: Mapping[str, Message]  # present inputs (anchor included), in configured order
    missing: Mapping[str, Missing]  # absent inputs and why, in configured order
    emitted_ns: int  # `now_ns` of the call that emitted it

    @property
    def present(self) -> Tuple[str, ...]:
        return tuple(self.messages)

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class InputCounts:
    received: int = 0
    used: int = 0
    superseded: int = 0
    buffered: int = 0
    dropped: Dict[str, int] = field(default_factory=lambda: {d.value: 0 for d in Drop})
    missing: Dict[str, int] = field(default_factory=lambda: {m.value: 0 for m in Missing})  # emitted sets lacking it

    def add(self, other: "InputCounts") -> None:
        self.received += other.received
        self.used += other.used
        self.superseded += other.superseded
        self.buffered += other.buffered
        for key, value in other.dropped.items():
            self.dropped[key] = self.dropped.get(key, 0) + value
        for key, value in other.missing.items():
            self.missing[key] = self.missing.get(key, 0) + value


@dataclass
class SyncStats:
    """Counters since construction (resets do not clear them)."""

    inputs: Dict[str, InputCounts]
    sets_emitted: int = 0
    sets_below_min: int = 0
    sets_replaced: int = 0  # pending sets given up at an anchor hand-over
    sets_forced: int = 0  # emitted before complete/max_wait: its anchor message was leaving a full buffer
    pending: int = 0  # sets waiting now
    anchor_switches: int = 0
    resets: int = 0

    def totals(self) -> InputCounts:
        total = InputCounts()
        for counts in self.inputs.values():
            total.add(counts)
        return total

    def as_dict(self) -> Dict[str, Any]:
        def flat(c: InputCounts) -> Dict[str, Any]:
            return {"received": c.received, "used": c.used, "superseded": c.superseded, "buffered": c.buffered,
                    "dropped": dict(c.dropped), "missing": dict(c.missing)}

        return {"sets_emitted": self.sets_emitted, "sets_below_min": self.sets_below_min,
                "sets_replaced": self.sets_replaced, "sets_forced": self.sets_forced, "pending": self.pending,
                "anchor_switches": self.anchor_switches, "resets": self.resets,
                "inputs": {name: flat(c) for name, c in self.inputs.items()}, "totals": flat(self.totals())}


@dataclass(frozen=True)
class InputStatus:
    """One input as diagnostics show it."""

    name: str
    state: InputState  # MISSING: nothing for silence_timeout; STALE: newest stamp that far behind the newest overall
    is_anchor: bool
    last_stamp_ns: Optional[int]  # newest stamp since the last reset
    last_arrival_ns: Optional[int]
    rate_hz: Optional[float]  # from the last arrivals; None until two have been seen
    buffered: int


class _Record:
    __slots__ = ("stamp", "payload", "arrival", "counted")

    def __init__(self, stamp: int, payload: Any, arrival: int):
        self.stamp, self.payload, self.arrival = stamp, payload, arrival
        self.counted = False  # its fate (used / superseded / dropped) is recorded


class _Pending:
    __slots__ = ("anchor", "record", "deadline")

    def __init__(self, anchor: str, record: _Record, deadline: int):
        self.anchor, self.record, self.deadline = anchor, record, deadline

    @property
    def stamp(self) -> int:
        return self.record.stamp


class _Input:
    __slots__ = ("name", "buffer", "newest", "last_arrival", "arrivals", "intervals", "counts")

    def __init__(self, name: str):
        self.name = name
        self.buffer: List[_Record] = []  # sorted by stamp
        self.newest: Optional[int] = None
        self.last_arrival: Optional[int] = None
        self.arrivals: Deque[int] = deque(maxlen=RATE_WINDOW)
        self.intervals: Deque[int] = deque(maxlen=RATE_WINDOW)  # stamp steps of in-order messages
        self.counts = InputCounts()

    def next_stamp(self) -> Optional[int]:
        """The earliest stamp its next message can carry (from its period), or None before it has shown one."""
        if self.newest is None or len(self.intervals) < MIN_INTERVALS:
            return None
        return self.newest + int(PERIOD_SHARE * min(self.intervals))

    def count_drop(self, record: _Record, reason: Drop) -> None:
        if not record.counted:
            record.counted = True
            self.counts.dropped[reason.value] += 1


_stamp = attrgetter("stamp")


def _check_ns(value: Any, what: str) -> int:
    if type(value) is int:  # the common case, checked first: this runs for every message
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # e.g. numpy.int64 from a bag index
        return int(value)
    raise MessageError(f"{what} must be int nanoseconds, got {value!r} ({type(value).__name__})")


class Synchronizer:
    """See the module docstring for the policy and the API."""

    def __init__(self, config: SyncConfig):
        if not isinstance(config, SyncConfig):
            raise ConfigError(f"Synchronizer needs a SyncConfig, got {type(config).__name__}")
        self.config = config
        self._lock = threading.Lock()
        self._inputs: Dict[str, _Input] = {name: _Input(name) for name in config.modalities}
        self._stats = SyncStats(inputs={name: inp.counts for name, inp in self._inputs.items()})
        self._seq = 0
        self._clear()

    # ---------------------------------------------------------------- public
    @property
    def anchor(self) -> str:
        with self._lock:
            return self._anchor

    def add(self, name: str, stamp_ns: int, payload: Any, now_ns: int) -> List[SyncSet]:
        """Take one message of input `name`; returns the sets that became ready (oldest first)."""
        inp = self._inputs.get(name)
        if inp is None:
            raise ConfigError(f"sync input {name!r} is not configured; configured: {list(self._inputs)}")
        if type(stamp_ns) is not int:
            stamp_ns = _check_ns(stamp_ns, f"{name} stamp_ns")
        if type(now_ns) is not int:
            now_ns = _check_ns(now_ns, "now_ns")
        with self._lock:
            now = self._advance_clock(now_ns)
            if inp.newest is not None and stamp_ns < inp.newest - self.config.jump_threshold_ns:
                self._reset_locked(now)
            inp.counts.received += 1
            inp.last_arrival = now
            inp.arrivals.append(now)
            ready: List[SyncSet] = []
            record = _Record(stamp_ns, payload, now)
            stored = self._store(inp, record, now, ready)
            self._update_anchor(now)  # any arrival, even a dropped one, shows the input is alive
            if stored and name == self._anchor:
                self._open(name, record)
            ready.extend(self._drain(now))
            return ready

    def poll(self, now_ns: int) -> List[SyncSet]:
        """Emit the sets that are complete or whose max_wait has run out by `now_ns`."""
        now_ns = _check_ns(now_ns, "now_ns")
        with self._lock:
            now = self._advance_clock(now_ns)
            self._update_anchor(now)
            return self._drain(now)

    def reset(self) -> None:
        """Clear buffers and waiting sets (their messages counted as dropped: reset); counters are kept."""
        with self._lock:
            self._reset_locked(None)

    def stats(self) -> SyncStats:
        """A snapshot of the counters (safe to keep and print while the synchronizer runs on)."""
        with self._lock:
            self._stats.pending = len(self._pending)
            for inp in self._inputs.values():
                inp.counts.buffered = sum(1 for r in inp.buffer if not r.counted)
            return replace(self._stats, inputs={n: replace(c, dropped=dict(c.dropped), missing=dict(c.missing))
                                                for n, c in self._stats.inputs.items()})

    def status(self, now_ns: int) -> Dict[str, InputStatus]:
        """Per-input health at `now_ns` for diagnostics (read-only: does not advance the synchronizer's clock)."""
        now_ns = _check_ns(now_ns, "now_ns")
        timeout = self.config.silence_timeout_ns
        with self._lock:
            stamps = [inp.newest for inp in self._inputs.values() if inp.newest is not None]
            newest_overall = max(stamps) if stamps else None
            out = {}
            for name, inp in self._inputs.items():
                if inp.last_arrival is None or now_ns - inp.last_arrival > timeout:
                    state = InputState.MISSING
                elif inp.newest is None or inp.newest < newest_overall - timeout:
                    state = InputState.STALE
                else:
                    state = InputState.OK
                span = inp.arrivals[-1] - inp.arrivals[0] if len(inp.arrivals) > 1 else 0
                rate = (len(inp.arrivals) - 1) * NS_PER_S / span if span > 0 else None
                out[name] = InputStatus(name, state, name == self._anchor, inp.newest, inp.last_arrival, rate,
                                        len(inp.buffer))
            return out

    # ---------------------------------------------------------------- state
    def _clear(self) -> None:
        self._pending: List[_Pending] = []  # sorted by anchor stamp
        self._floor: Optional[int] = None  # stamp of the newest emitted set: later sets must be newer
        self._anchor = self.config.anchor
        self._origin: Optional[int] = None  # first `now` since the last reset: the primary anchor's grace period
        self._last_now: Optional[int] = None

    def _reset_locked(self, now: Optional[int]) -> None:
        for inp in self._inputs.values():
            for record in inp.buffer:
                inp.count_drop(record, Drop.RESET)
            inp.buffer.clear()
            inp.newest = inp.last_arrival = None
            inp.arrivals.clear()
            inp.intervals.clear()
        self._clear()  # waiting sets go too: their anchor messages were in the buffers just counted
        self._origin = self._last_now = now
        self._stats.resets += 1

    def _advance_clock(self, now: int) -> int:
        # A small step back (callbacks on several threads) is clamped; a big one is a clock jump.
        if self._last_now is None:
            self._origin = self._last_now = now
        elif now < self._last_now - self.config.jump_threshold_ns:
            self._reset_locked(now)
        else:
            self._last_now = max(now, self._last_now)
        return self._last_now

    def _store(self, inp: _Input, record: _Record, now: int, ready: List[SyncSet]) -> bool:
        """Put a message into its input's buffer; False when it was dropped instead."""
        slop = self.config.slop_ns
        if self._floor is not None and record.stamp < self._floor - slop:
            inp.count_drop(record, Drop.LATE)
            return False
        buf = inp.buffer
        at = bisect.bisect_left(buf, record.stamp, key=_stamp)
        if at < len(buf) and buf[at].stamp == record.stamp:
            inp.count_drop(record, Drop.DUPLICATE)
            return False
        if len(buf) >= self.config.buffer_size:
            if at == 0:  # older than everything held: it is the one to go
                inp.count_drop(record, Drop.OVERFLOW)
                return False
            oldest = buf[0]
            while any(p.record is oldest for p in self._pending):  # finish its set rather than lose it
                ready.extend(self._emit_front(now, forced=True))
            if buf and buf[0] is oldest:
                inp.count_drop(buf.pop(0), Drop.OVERFLOW)
            at = bisect.bisect_left(buf, record.stamp, key=_stamp)
        buf.insert(at, record)
        if inp.newest is not None and record.stamp > inp.newest:
            inp.intervals.append(record.stamp - inp.newest)
        elif inp.newest is not None:  # delivered out of order: an older message may still follow, stop predicting
            inp.intervals.clear()
        inp.newest = record.stamp if inp.newest is None else max(inp.newest, record.stamp)
        return True

    # ---------------------------------------------------------------- anchor
    def _silent(self, inp: _Input, now: int) -> bool:
        """Nothing arrived for silence_timeout; an input not heard from yet gets that long from the (re)start."""
        last = inp.last_arrival if inp.last_arrival is not None else self._origin
        return last is None or now - last > self.config.silence_timeout_ns

    def _can_anchor(self, inp: _Input, now: int) -> bool:
        # Only the configured anchor may hold the role before it has delivered anything.
        return not self._silent(inp, now) and (inp.last_arrival is not None or inp.name == self.config.anchor)

    def _update_anchor(self, now: int) -> None:
        if self._anchor == self.config.anchor and self._can_anchor(self._inputs[self._anchor], now):
            return  # the usual case: the configured anchor is alive and nothing outranks it
        best = next((n for n in self.config.priority if self._can_anchor(self._inputs[n], now)), None)
        if best is None or best == self._anchor:
            return
        self._anchor = best
        self._stats.anchor_switches += 1
        # Open sets for the new anchor's messages from the interval the old anchor was dead, newer than any set.
        covered = max((s for s in (self._floor, self._pending[-1].stamp if self._pending else None)
                       if s is not None), default=None)
        for record in list(self._inputs[best].buffer):
            if (not record.counted and now - record.arrival <= self.config.silence_timeout_ns
                    and (covered is None or record.stamp > covered + self.config.slop_ns)):
                self._open(best, record)

    def _open(self, name: str, record: _Record) -> None:
        if self._floor is not None and record.stamp <= self._floor:
            return
        if any(p.record is record for p in self._pending):
            return
        # The time from this stamp on belongs to the current anchor: another anchor's waiting sets there would
        # duplicate its sets.
        limit = record.stamp - self.config.slop_ns
        kept = [p for p in self._pending if p.anchor == name or p.stamp < limit]
        self._stats.sets_replaced += len(self._pending) - len(kept)
        pending = _Pending(name, record, record.arrival + self.config.max_wait_ns)
        kept.insert(bisect.bisect_right(kept, record.stamp, key=_stamp), pending)
        self._pending = kept

    # ---------------------------------------------------------------- emission
    def _nearest(self, inp: _Input, stamp: int) -> Optional[_Record]:
        slop = self.config.slop_ns
        buf = inp.buffer
        best = None
        for i in range(bisect.bisect_left(buf, stamp - slop, key=_stamp), len(buf)):
            record = buf[i]
            if record.stamp > stamp + slop:
                break
            if best is None or abs(record.stamp - stamp) <= abs(best.stamp - stamp):
                best = record
        return best

    def _settled(self, pending: _Pending, now: int) -> bool:
        """Waiting cannot change the set: for every other live input no nearer message can follow (arriving in
        order). A silent input holds nothing back."""
        others = [inp for name, inp in self._inputs.items() if name != pending.anchor]
        # While an input is silent it may come back during the wait for the others and then join the set: predicting
        # would emit before that, so the set would differ. Then every input is waited for as before.
        predict = not any(self._silent(inp, now) for inp in others)
        for inp in others:
            if self._silent(inp, now):
                continue
            if not self._input_settled(inp, pending.stamp, predict):
                return False
        return True

    def _input_settled(self, inp: _Input, stamp: int, predict: bool = True) -> bool:
        """The input has a match for `stamp` and no nearer message can follow."""
        match = self._nearest(inp, stamp)
        if match is None:
            return False
        if inp.newest >= stamp:  # its stamps have passed the anchor's
            return True
        if not predict:
            return False
        upcoming = inp.next_stamp()
        # Ties go to the newer message, so the next one must be strictly farther than the match.
        return upcoming is not None and upcoming - stamp > stamp - match.stamp

    def _drain(self, now: int) -> List[SyncSet]:
        ready: List[SyncSet] = []
        while self._pending:
            front = self._pending[0]
            if not (now >= front.deadline or self._settled(front, now)):
                break
            ready.extend(self._emit_front(now, forced=False))
        return ready

    def _emit_front(self, now: int, forced: bool) -> List[SyncSet]:
        pending = self._pending.pop(0)
        if forced:
            self._stats.sets_forced += 1
        timeout = self.config.silence_timeout_ns
        found: Dict[str, _Record] = {}
        missing: Dict[str, Missing] = {}
        for name, inp in self._inputs.items():
            record = pending.record if name == pending.anchor else self._nearest(inp, pending.stamp)
            if record is not None:
                found[name] = record
            elif inp.last_arrival is None or now - inp.last_arrival > timeout:
                missing[name] = Missing.SILENT
            elif inp.newest is None or inp.newest < pending.stamp - timeout:
                missing[name] = Missing.STALE
            else:
                missing[name] = Missing.OUT_OF_SLOP
        self._floor = pending.stamp if self._floor is None else max(self._floor, pending.stamp)
        self._evict()
        if len(found) < self.config.min_modalities:
            self._stats.sets_below_min += 1
            self._inputs[pending.anchor].count_drop(pending.record, Drop.BELOW_MIN)
            return []
        for name, record in found.items():
            if not record.counted:
                record.counted = True
                self._inputs[name].counts.used += 1
        for name, reason in missing.items():
            self._inputs[name].counts.missing[reason.value] += 1
        self._stats.sets_emitted += 1
        self._seq += 1
        messages = {n: Message(r.stamp, r.payload, r.arrival) for n, r in found.items()}
        return [SyncSet(self._seq - 1, pending.anchor, pending.stamp, messages, missing, now)]

    def _evict(self) -> None:
        """Drop messages too old for any set to come (they are behind the newest emitted set by more than slop)."""
        limit = self._floor - self.config.slop_ns
        for inp in self._inputs.values():
            cut = bisect.bisect_left(inp.buffer, limit, key=_stamp)
            for record in inp.buffer[:cut]:
                if not record.counted:
                    record.counted = True
                    inp.counts.superseded += 1
            del inp.buffer[:cut]
