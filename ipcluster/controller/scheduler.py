"""Processes layer: which engine runs a load-balanced task, and when. Policy only, no sockets.

    submit(task) ──▶ one bucket per restriction ──┐
                     (None: any engine), each a    ├──▶ ready() ──▶ [(task, engine id)]
                     heap: priority, then arrival  │     the scheme picks among the
    finished(eid) ─▶ engine has room again ────────┘     allowed engines with room

- An engine **has room** while its outstanding tasks (balanced, and direct ones reported with
  `started`) are below its prefetch depth: the high-water mark `hwm` (0: no limit) for an
  engine whose tasks are short, fewer for one whose tasks take longer. The depth is what keeps
  about `PREFETCH` seconds of work queued behind the task an engine runs, at least `SHALLOW`
  tasks (2: the next task waits on the engine, not here) and at most `hwm` (32 by default), from
  a moving average of the engine's task durations (`SHALLOW` until one finished). Short tasks
  go several to a message each way, and an engine never waits for the next one; tasks of a
  millisecond or more are not hoarded by an engine, so the last tasks of a map do not queue
  behind each other on one engine while another idles. `hwm` 1 or 2 is a fixed depth.
- **No head-of-line blocking**: a task queued on an engine busy with a long one should not wait
  while another engine idles. `movable()` names the engines holding such tasks whenever an
  engine is idle and nothing waits here; the server asks them to give back the tasks they have
  not started (the "not started" handshake of `recovery.withdraw`), which then queue here again.
- Tasks run **highest `priority` first**, in arrival order among equal priorities.
- The **scheme** picks the engine among the allowed ones with room (ipyparallel's schemes):
  `leastload`  fewest outstanding tasks, the least recently used of those (the default);
  `lru`        the engine given a task least recently;
  `plainrandom` any, uniformly;
  `twobin`     two drawn uniformly, the less recently used of the two;
  `weighted`   two drawn with probability proportional to observed speed (1 / mean task
               duration), the one that would finish its queue plus this task soonest.

How it stays cheap: after each `ready()`, no waiting task could run on an engine with room.
So the next call looks only at buckets that got new tasks and buckets that include an engine
that got room since; a task waiting for a full engine is never looked at again until that
engine frees a slot. Per call the work is O((b + d) log b) for b such buckets and d tasks
sent, plus the choice of engine: O(log E) for `leastload`/`lru` on unrestricted tasks (a lazy
heap), O(1) for the random schemes, O(|targets|) for restricted tasks, O(E) for `weighted`.
`remove` is O(1) (entries are dropped lazily). `steps` counts the buckets, tasks and engines
looked at, so tests can check this without timing anything.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass

SCHEMES = ("leastload", "lru", "twobin", "weighted", "plainrandom")
SHALLOW = 2  # tasks an engine may hold whatever its tasks take (when `hwm` allows as many)
PREFETCH = 0.002  # seconds of work an engine of short tasks may hold queued, up to `hwm`
PACE = 0.25  # weight of the newest duration in an engine's moving average


@dataclass
class Pending:
    task_id: str
    targets: frozenset | None  # engines allowed to run it; None means any
    payload: object  # what the server needs to send it
    priority: float = 0  # higher runs first; equal priorities run in arrival order


def make_scheduler(scheme: str = "leastload", hwm: int = 32, seed: int | None = None) -> Scheduler:
    """The scheduler for `scheme`; an unknown name lists the valid ones."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheduling scheme {scheme!r}; valid schemes: "
                         f"{', '.join(SCHEMES)} (default: leastload)")
    if not isinstance(hwm, int) or hwm < 0:
        raise ValueError(f"hwm must be an int >= 0 (0: no limit), not {hwm!r}")
    return Scheduler(scheme, hwm, seed)


class _Roster:
    """A set with O(1) add, discard and uniform random choice: the engines that have room."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.index: dict[int, int] = {}

    def add(self, eid: int) -> None:
        if eid not in self.index:
            self.index[eid] = len(self.items)
            self.items.append(eid)

    def discard(self, eid: int) -> None:
        i = self.index.pop(eid, None)
        if i is not None:
            last = self.items.pop()
            if i < len(self.items):  # move the last one into the hole
                self.items[i] = last
                self.index[last] = i

    def choice(self, rng: random.Random) -> int:
        return self.items[rng.randrange(len(self.items))]

    def __contains__(self, eid) -> bool:
        return eid in self.index

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


class _Bucket:
    """The tasks with one restriction: a heap of (-priority, arrival, task), removals lazy."""

    __slots__ = ("heap", "live")

    def __init__(self) -> None:
        self.heap: list = []
        self.live = 0


class Scheduler:
    def __init__(self, scheme: str = "leastload", hwm: int = 32, seed: int | None = None) -> None:
        self.scheme, self.hwm = scheme, hwm
        self.rng = random.Random(seed)
        self.load: dict[int, int] = {}  # engine -> outstanding tasks
        self.stamp: dict[int, int] = {}  # engine -> when it last got a task; lower is longer ago
        self.busy: dict[int, list] = {}  # engine -> [tasks timed, seconds], for `weighted`
        self.pace: dict[int, float] = {}  # engine -> moving average of its tasks' durations
        self.depths: dict[int, int] = {}  # engine -> its prefetch depth, from its pace
        self.room = _Roster()
        self.paused: set[int] = set()  # engines that get nothing for now (frozen)
        self.idle: set[int] = set()  # engines with no outstanding task, not paused
        self.backlog: set[int] = set()  # engines with a task queued behind the one they run
        self.buckets: dict[frozenset | None, _Bucket] = {}
        self.keys_of: dict[int, set] = {}  # engine id -> restrictions of buckets naming it
        self._queued: dict[str, Pending] = {}  # in arrival order
        self._fresh: set = set()  # restrictions that got a task since the last ready()
        self._freed: set[int] = set()  # engines that got room since the last ready()
        self._ranked: list = []  # (rank, engine) of engines with room; stale entries skipped
        self._seq = itertools.count(1)
        self.steps = 0

    @property
    def pending(self):
        """The queued tasks, in arrival order (a live view: it has a length)."""
        return self._queued.values()

    # -- engines ----------------------------------------------------------------------------

    def add_engine(self, eid: int) -> None:
        if eid in self.load:
            return
        self.load[eid] = 0
        self.stamp[eid] = -next(self._seq)  # the newest engine is the least recently used
        self.busy[eid] = [0, 0.0]
        self._update(eid, had_room=False)

    def remove_engine(self, eid: int) -> list[Pending]:
        """Forget `eid`; returns (and unqueues) the tasks no registered engine may run now."""
        if self.load.pop(eid, None) is None:
            return []
        del self.stamp[eid], self.busy[eid]
        self.pace.pop(eid, None)
        self.depths.pop(eid, None)
        self.paused.discard(eid)
        self.room.discard(eid)
        self.idle.discard(eid)
        self.backlog.discard(eid)
        self._freed.discard(eid)
        stranded = []
        for key in list(self.keys_of.get(eid, ())):
            if not any(e in self.load for e in key):
                lost = [t for _, _, t in sorted(self.buckets[key].heap)
                        if self._queued.get(t.task_id) is t]
                for task in lost:
                    del self._queued[task.task_id]
                stranded += lost
                self._drop_bucket(key)
        return stranded

    def started(self, eid: int) -> None:
        """A task was sent to `eid` directly, outside the balancer: it counts toward its load."""
        if eid in self.load:
            had_room = self._has_room(eid)
            self.load[eid] += 1
            self._update(eid, had_room)

    def finished(self, eid: int, duration: float | None = None) -> None:
        """A task on `eid` ended; `duration` (seconds it ran) feeds the `weighted` scheme and
        the engine's prefetch depth."""
        if self.load.get(eid, 0) > 0:
            had_room = self._has_room(eid)
            self.load[eid] -= 1
            if duration is not None and duration >= 0:
                self.busy[eid][0] += 1
                self.busy[eid][1] += duration
                pace = self.pace.get(eid)
                self.pace[eid] = pace = duration if pace is None else pace + PACE * (duration - pace)
                if self.hwm > SHALLOW:
                    self.depths[eid] = min(self.hwm, max(SHALLOW, 1 + int(PREFETCH / max(pace, 1e-6))))
            self._update(eid, had_room)

    def pause(self, eid: int) -> None:
        """Send nothing more to `eid` (it is frozen) until `resume`."""
        if eid in self.load:
            self.paused.add(eid)
            self._update(eid, had_room=True)

    def resume(self, eid: int) -> None:
        if eid in self.paused:
            self.paused.discard(eid)
            self._update(eid, had_room=False)

    def _has_room(self, eid: int) -> bool:
        hwm = self.hwm  # `depth`, inline: twice for every task
        return eid not in self.paused and (not hwm or self.load[eid] < (
            self.depths.get(eid, SHALLOW) if hwm > SHALLOW else hwm))

    def depth(self, eid: int) -> int:
        """How many outstanding tasks `eid` may hold: `hwm` if its tasks are short, down to
        `SHALLOW` as they take `PREFETCH` seconds or more (and `SHALLOW` until one finished)."""
        return self.depths.get(eid, SHALLOW) if self.hwm > SHALLOW else self.hwm

    def _rank(self, eid: int) -> tuple:
        if self.scheme == "leastload":
            return (self.load[eid], self.stamp[eid])
        return (self.stamp[eid],)

    def movable(self) -> set[int]:
        """Engines whose queued (not started) tasks an idle engine could run sooner: while an
        engine is idle and no task waits here, those with a task queued behind another."""
        return self.backlog if self.idle and not self._queued else set()

    def _update(self, eid: int, had_room: bool) -> None:
        """Keep `room`, `idle`, `backlog`, the engine heap and `_freed` true after `eid`
        changed."""
        load = self.load[eid]
        # a paused (frozen) engine takes nothing: not idle, so nothing is moved for it
        (self.idle.add if load == 0 and eid not in self.paused else self.idle.discard)(eid)
        (self.backlog.add if load >= 2 else self.backlog.discard)(eid)
        if not self._has_room(eid):
            self.room.discard(eid)
            return
        if not had_room:  # (with room before: in `room` already)
            self.room.add(eid)
            self._freed.add(eid)
        if self.scheme in ("leastload", "lru"):
            heapq.heappush(self._ranked, (self._rank(eid), eid))
            if len(self._ranked) > 4 * len(self.load) + 64:  # too many stale entries: rebuild
                self._ranked = [(self._rank(e), e) for e in self.room]
                heapq.heapify(self._ranked)

    # -- tasks ------------------------------------------------------------------------------

    def submit(self, task: Pending) -> None:
        """Queue `task`; `ready()` says when and where it can go."""
        if task.task_id in self._queued:
            raise ValueError(f"task {task.task_id!r} is queued already")
        if task.targets is not None:
            task.targets = frozenset(task.targets)
            if not task.targets:
                raise ValueError(f"task {task.task_id!r} is restricted to no engine at all")
        key = task.targets
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket()
            for eid in key or ():
                self.keys_of.setdefault(eid, set()).add(key)
        heapq.heappush(bucket.heap, (-task.priority, next(self._seq), task))
        bucket.live += 1
        self._queued[task.task_id] = task
        self._fresh.add(key)

    def remove(self, task_id: str) -> bool:
        """Take a queued task out (it was aborted); False if it is not queued."""
        task = self._queued.pop(task_id, None)
        if task is None:
            return False
        bucket = self.buckets[task.targets]
        bucket.live -= 1
        if not bucket.live:
            self._drop_bucket(task.targets)
        elif len(bucket.heap) > 2 * bucket.live + 32:  # mostly removed entries: compact
            bucket.heap = [e for e in bucket.heap if self._queued.get(e[2].task_id) is e[2]]
            heapq.heapify(bucket.heap)
        return True

    def _drop_bucket(self, key) -> None:
        del self.buckets[key]
        for eid in key or ():
            keys = self.keys_of.get(eid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.keys_of[eid]

    def _head(self, bucket: _Bucket):
        """The bucket's best live entry, dropping removed ones on the way."""
        heap = bucket.heap
        while heap and self._queued.get(heap[0][2].task_id) is not heap[0][2]:
            heapq.heappop(heap)
            self.steps += 1
        return heap[0] if heap else None

    def ready(self) -> list[tuple[Pending, int]]:
        """Queued tasks that can be sent now, each with its engine, best first."""
        if not self._queued:  # nothing to send (most calls, after each result of a burst)
            self._fresh.clear()
            self._freed.clear()
            return []
        keys = self._fresh
        for eid in self._freed:
            keys |= self.keys_of.get(eid, set())
        if self._freed and None in self.buckets:
            keys.add(None)
        self._fresh, self._freed = set(), set()
        heads = []  # one entry per bucket: (-priority, arrival, restriction) of its head
        for key in keys:
            self.steps += 1
            bucket = self.buckets.get(key)
            head = self._head(bucket) if bucket is not None else None
            if head is not None:
                heads.append((head[0], head[1], key))
        heapq.heapify(heads)
        out = []
        while heads and self.room:
            _, _, key = heapq.heappop(heads)
            self.steps += 1
            eid = self._pick(key)
            if eid is None:
                continue  # every engine it may use is full: it waits until one frees a slot
            bucket = self.buckets[key]
            task = heapq.heappop(bucket.heap)[2]
            del self._queued[task.task_id]
            bucket.live -= 1
            self.load[eid] += 1
            self.stamp[eid] = next(self._seq)
            self._update(eid, had_room=True)
            out.append((task, eid))
            head = self._head(bucket)
            if head is None:
                self._drop_bucket(key)
            else:
                heapq.heappush(heads, (head[0], head[1], key))
        return out

    # -- choosing an engine -----------------------------------------------------------------

    def _pick(self, key) -> int | None:
        """The engine with room the scheme picks for a task restricted to `key`."""
        if key is None:
            if not self.room:
                return None
            if self.scheme in ("leastload", "lru"):
                return self._best_ranked()
            if self.scheme == "weighted":
                return self._choose(list(self.room))
            return self._choose(self.room)
        small, big = (key, self.room) if len(key) <= len(self.room) else (self.room, key)
        self.steps += len(small)
        allowed = [e for e in small if e in big]
        return self._choose(allowed) if allowed else None

    def _best_ranked(self) -> int:
        ranked = self._ranked
        while True:  # an engine with room always has a current entry
            rank, eid = ranked[0]
            self.steps += 1
            if eid in self.room and rank == self._rank(eid):
                return eid
            heapq.heappop(ranked)

    def _choose(self, engines) -> int:
        """The scheme's choice among `engines` (a non-empty list, or the roster)."""
        rng, stamp = self.rng, self.stamp
        if self.scheme == "leastload":
            return min(engines, key=self._rank)
        if self.scheme == "lru":
            return min(engines, key=stamp.__getitem__)
        if self.scheme == "plainrandom":
            return engines.choice(rng) if isinstance(engines, _Roster) else rng.choice(engines)
        if self.scheme == "twobin":
            draw = engines.choice if isinstance(engines, _Roster) else lambda r: r.choice(engines)
            return min(draw(rng), draw(rng), key=stamp.__getitem__)
        speed = self._speeds(engines)
        a, b = rng.choices(engines, weights=[speed[e] for e in engines], k=2)
        return min(a, b, key=lambda e: ((self.load[e] + 1) / speed[e], stamp[e]))

    def _speeds(self, engines: list[int]) -> dict[int, float]:
        """Tasks per second of each engine; engines not timed yet get the mean of the others
        (or 1), so a new engine is neither starved nor flooded."""
        known = {e: n / t for e in engines for n, t in [self.busy[e]] if n and t > 0}
        default = sum(known.values()) / len(known) if known else 1.0
        return {e: known.get(e, default) for e in engines}
