"""Processes layer: the engines the controller knows, by id and by socket identity, and in the
order they were last heard from (so finding the silent ones looks at those alone). No policy."""

from __future__ import annotations

import secrets
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field


@dataclass
class Engine:
    id: int
    identity: bytes  # the engine's socket identity on the engine ROUTER
    pid: int
    host: str
    shm: str = ""  # its shared-memory identity (host, boot id, probe), given to clients
    data: str = ""  # the URL of its data port, where clients on other hosts send large buffers
    registered: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    tasks: dict = field(default_factory=dict)  # task id -> balanced?, sent and not yet answered
    withdrawing: set = field(default_factory=set)  # task ids asked back, not yet answered
    progressed: float = field(default_factory=time.monotonic)  # its last result, or work given
    # to it while idle: an engine with queued tasks and no progress for a while runs a long one
    answered: float = 0.0  # when its beat was last answered (monotonic)
    beat: float = 1.0  # seconds between its beats, as we last told it
    completed: int = 0
    responsive: bool = True  # False once silent for the controller's `unresponsive_after`
    frozen: bool = False  # stopped (its watchdog says) or silent with its watchdog: see liveness

    def info(self) -> dict:
        return {"id": self.id, "pid": self.pid, "host": self.host, "shm": self.shm, "data": self.data,
                "tasks": len(self.tasks),
                "completed": self.completed, "state": self.state,
                "current": next(iter(self.tasks), None),
                "silent": round(time.monotonic() - self.last_seen, 3)}

    @property
    def state(self) -> str:
        if not self.responsive:
            return "unresponsive"
        return "busy" if self.tasks else "idle"

    def status(self, verbose: bool = False) -> dict:
        """As ipyparallel's queue_status: direct (`queue`) and balanced (`tasks`) work."""
        direct = [t for t, balanced in self.tasks.items() if not balanced]
        balanced = [t for t, b in self.tasks.items() if b]
        if verbose:
            return {"queue": direct, "tasks": balanced, "completed": self.completed}
        return {"queue": len(direct), "tasks": len(balanced), "completed": self.completed}


class Registry:
    def __init__(self) -> None:
        self.by_id: dict[int, Engine] = {}
        self.by_identity: dict[bytes, Engine] = {}
        # bumped on every change, so clients can tell their list is stale; it starts anywhere,
        # so that a client does not take a restarted controller's list for the one it knew
        self.version = secrets.randbits(48)
        self.dropped: dict[tuple, float] = {}  # (pid, host) of engines removed as dead -> when
        self.gone: dict[tuple, int] = {}  # (pid, host) of every engine removed -> its id
        self.told: Counter = Counter()  # beat interval -> engines last told it
        self._by_silence: OrderedDict[int, Engine] = OrderedDict()  # least recently heard first
        self._by_pid: dict[tuple, Engine] = {}  # (pid, host) -> engine, for its watchdog's reports
        self._next_id = 0
        self.scanned = 0  # engines looked at to find the silent ones (a cost, for tests)

    def __len__(self) -> int:
        return len(self.by_id)

    def ids(self) -> list[int]:
        return sorted(self.by_id)

    def add(self, identity: bytes, pid: int, host: str, requested_id: int | None = None) -> Engine:
        if requested_id is not None and requested_id not in self.by_id:
            eid = requested_id
        else:
            while self._next_id in self.by_id:
                self._next_id += 1
            eid = self._next_id
            self._next_id += 1  # a new engine never gets the id of one that left (ipyparallel's)
        engine = Engine(eid, identity, pid, host)
        self.by_id[eid] = engine
        self.by_identity[identity] = engine
        self._by_silence[eid] = engine
        self._by_pid.setdefault((pid, host), engine)
        self.told[engine.beat] += 1
        self.version += 1
        return engine

    def remove(self, engine: Engine, dead: bool = False) -> None:
        if dead:  # its supervisor, if any, should make sure the process is gone
            self.dropped[(engine.pid, engine.host)] = time.time()
            while len(self.dropped) > 1000:
                self.dropped.pop(next(iter(self.dropped)))
        self.gone[(engine.pid, engine.host)] = engine.id  # its supervisor may ask, to restart it
        while len(self.gone) > 1000:
            self.gone.pop(next(iter(self.gone)))
        if self.by_id.pop(engine.id, None) is engine:
            self._forget_beat(engine.beat)
            self._by_silence.pop(engine.id, None)
            if self._by_pid.get((engine.pid, engine.host)) is engine:
                del self._by_pid[(engine.pid, engine.host)]
        self.by_identity.pop(engine.identity, None)
        self.version += 1

    def heard(self, engine: Engine, now: float) -> None:
        """`engine` said something at `now`: O(1), it moves to the end of the silence order."""
        engine.last_seen = now
        if engine.id in self._by_silence:
            self._by_silence.move_to_end(engine.id)

    def tell_beat(self, engine: Engine, interval: float) -> None:
        """Record that `engine` was told to beat every `interval` seconds."""
        if self.by_id.get(engine.id) is engine:
            self._forget_beat(engine.beat)
            self.told[interval] += 1
        engine.beat = interval

    def longest_beat(self, default: float) -> float:
        """The longest beat interval a registered engine may still be using."""
        return max(self.told, default=default)

    def _forget_beat(self, interval: float) -> None:
        self.told[interval] -= 1
        if not self.told[interval]:
            del self.told[interval]

    def by_pid(self, pid: int, host: str) -> Engine | None:
        return self._by_pid.get((pid, host))

    def silent_since(self, deadline: float) -> list[Engine]:
        """Engines not heard from since `deadline` (a `time.monotonic()` value): O(their
        number), the others are never looked at."""
        silent = []
        for engine in self._by_silence.values():
            self.scanned += 1
            if engine.last_seen >= deadline:
                break
            silent.append(engine)
        return silent
