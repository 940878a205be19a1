"""Processes layer: when a task's dependencies let it run, and where. Policy only, no sockets.

    add(task, after, follow) ──▶ ("ready", engines or None) | ("waiting", None)
                                 | ("impossible", reason)
    finished(task, ok, engine) ─▶ [(task, "ready", engines or None) | (task, "impossible", why)]
    engine_gone(eid) ──────────▶ [(task, "impossible", why)]   (tasks that followed work there)

- `after` is about time: run once those tasks are done. `follow` is about place: run on the
  engine where those tasks ran, which also means after them.
- A `Dep(ids, all=True, success=True, failure=False)` is ipyparallel's Dependency: met when
  all (with ``all=False``: any) of `ids` finished with an outcome that counts (success if
  `success`, failure if `failure`). For `follow`, with ``all=True`` they must all have run on
  one engine; with ``all=False`` the task may run on any engine where one of them counted.
- A task is reported **impossible as soon as** its dependency can no longer be met, never left
  waiting: a parent failed and only success counts, an id never submitted (or finished longer
  ago than the last `keep` tasks), its own id, follow tasks on different engines, a followed
  engine that went away (its namespace went with it, even if an engine with its id returns).
- An impossible task counts as failed for its own dependents, so a whole subtree is reported
  by the one call that dooms its root.
- Memory: the waiting tasks, the edges to unfinished tasks they wait for, and the outcomes of
  the last `keep` finished tasks (for tasks submitted later that name them). The work of an
  event is proportional to the edges it resolves.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Dep:
    ids: frozenset
    all: bool = True  # all of ids, or any one of them
    success: bool = True  # a success counts
    failure: bool = False  # a failure counts

    @classmethod
    def from_wire(cls, value) -> Dep | None:
        """The dependency in an apply header: a list of task ids, or ``{"ids": [...], "all":
        bool, "success": bool, "failure": bool}``; None when it names no task."""
        if value is None:
            return None
        if isinstance(value, list):
            value = {"ids": value}
        if not isinstance(value, dict):
            raise ValueError(f"a dependency is a list of task ids or a map, not {value!r}")
        ids = value.get("ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"a dependency's 'ids' must be a list of task ids, not {ids!r}")
        defaults = (("all", True), ("success", True), ("failure", False))
        flags = {k: value.get(k, d) for k, d in defaults}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ValueError(f"a dependency's all, success and failure must be booleans: {flags}")
        if not (flags["success"] or flags["failure"]):
            raise ValueError("a dependency must count successes, failures or both")
        return cls(frozenset(ids), **flags) if ids else None


class _Need:
    """One side (`after` or `follow`) of a waiting task: what is left, what counted, why not."""

    __slots__ = ("dep", "follow", "left", "good", "places", "why")

    def __init__(self, dep: Dep, follow: bool) -> None:
        self.dep, self.follow = dep, follow
        self.left = set(dep.ids)
        self.good = 0
        self.places: set[int] = set()  # for follow: live engines where a task that counted ran
        self.why = ""  # the first reason it cannot all be met

    def see(self, dep_id: str, ok: bool, place: int | None) -> None:
        """`dep_id` finished (`ok`), on `place` if that engine is still the one it ran on."""
        self.left.discard(dep_id)
        if not (self.dep.success if ok else self.dep.failure):
            self.why = self.why or (f"task {dep_id} {'succeeded' if ok else 'failed'} and only "
                                    f"{'failures' if ok else 'successes'} count")
        elif self.follow and place is None:
            self.why = self.why or f"task {dep_id} ran on an engine that is gone"
        else:
            self.good += 1
            if self.follow:
                self.places.add(place)

    def lose(self, eid: int) -> None:
        self.places.discard(eid)
        self.why = self.why or f"engine {eid}, where followed tasks ran, is gone"

    def met(self) -> bool:
        if self.dep.all:
            return not self.left and not self.why and (not self.follow or len(self.places) == 1)
        return bool(self.places) if self.follow else self.good > 0

    def doomed(self) -> str:
        """Why this can never be met, or "" while it still can."""
        if self.dep.all:
            if self.why:
                return self.why
            if self.follow and len(self.places) > 1:
                return f"followed tasks ran on different engines {sorted(self.places)}"
            return ""
        if not self.left and not self.met():
            return f"none of {len(self.dep.ids)} tasks counts ({self.why or 'engines gone'})"
        return ""


class _Waiter:
    __slots__ = ("task_id", "after", "follow")

    def __init__(self, task_id: str, after: _Need | None, follow: _Need | None) -> None:
        self.task_id, self.after, self.follow = task_id, after, follow

    def needs(self):
        return [n for n in (self.after, self.follow) if n is not None]

    def verdict(self):
        for side, need in (("after", self.after), ("follow", self.follow)):
            why = need.doomed() if need is not None else ""
            if why:
                return "impossible", f"its {side} dependency cannot be met: {why}"
        if all(n.met() for n in self.needs()):
            return "ready", frozenset(self.follow.places) if self.follow is not None else None
        return "waiting", None


class Graph:
    def __init__(self, keep: int = 100_000) -> None:
        self.keep = max(1, keep)
        self.open: set[str] = set()  # added and not finished: waiting, queued or running
        self.waiting: dict[str, _Waiter] = {}
        self.dependents: dict[str, list[str]] = {}  # unfinished task -> waiting tasks naming it
        self.outcomes: OrderedDict[str, tuple] = OrderedDict()  # task -> (ok, engine, epoch)
        self.epoch: dict[int, int] = {}  # engine id -> times it went away
        self.gone: set[int] = set()
        self.placed: dict[int, set[str]] = {}  # engine -> waiting tasks that may follow onto it

    def __len__(self) -> int:
        return len(self.waiting)

    # -- events -----------------------------------------------------------------------------

    def add(self, task_id: str, after: Dep | None = None, follow: Dep | None = None):
        """A new task; every task is added (direct ones too), so others can name it."""
        if task_id in self.open or task_id in self.outcomes:
            raise ValueError(f"task {task_id!r} was added already")
        self.open.add(task_id)
        if after is None and follow is None:  # most tasks: nothing to wait for
            return "ready", None
        w = _Waiter(task_id, after and _Need(after, False), follow and _Need(follow, True))
        for need in w.needs():
            for dep_id in need.dep.ids:
                if dep_id == task_id:
                    return self._doom_new(task_id, "a task cannot depend on itself", "invalid")
                if dep_id not in self.open and dep_id not in self.outcomes:
                    return self._doom_new(task_id, f"task {dep_id!r} is unknown here (never "
                                          f"submitted, purged, or finished before the last "
                                          f"{self.keep})",
                                          "invalid")
        for need in w.needs():
            for dep_id in need.dep.ids:
                if dep_id in self.outcomes:
                    ok, eid, epoch = self.outcomes[dep_id]
                    need.see(dep_id, ok, self._live(eid, epoch))
                else:
                    self.dependents.setdefault(dep_id, []).append(task_id)
        state, detail = w.verdict()
        if state == "impossible":
            return self._doom_new(task_id, detail)
        if state == "waiting":
            self.waiting[task_id] = w
            self._place(w)
        return state, detail

    def finished(self, task_id: str, ok: bool, engine: int | None = None) -> list[tuple]:
        """`task_id` ended (`ok`: it succeeded) on `engine`; the waiting tasks this releases
        or dooms. Finishing a task twice does nothing; an id never added is just recorded
        (so a restored controller can replay the outcomes it kept)."""
        if task_id in self.outcomes:
            return []
        self.open.discard(task_id)
        waiter = self.waiting.pop(task_id, None)
        if waiter is not None:  # it was aborted or failed while waiting
            self._unplace(waiter)
        place = engine if engine is not None and engine not in self.gone else None
        self._record(task_id, ok, place)
        if task_id not in self.dependents:  # most tasks: nothing waits for this one
            return []
        return self._propagate(deque([(task_id, ok, place)]))

    def forget(self, task_id: str) -> None:
        """A finished task was purged: forget its outcome (a task naming it later is refused)."""
        self.outcomes.pop(task_id, None)

    def take(self) -> list:
        """The outcomes kept, oldest first, forgotten here until `put` back (to copy them into
        fresh memory: controller/memory.py)."""
        kept = [[task_id, *outcome] for task_id, outcome in self.outcomes.items()]
        self.outcomes = OrderedDict()
        return kept

    def put(self, kept: list) -> None:
        self.outcomes.update((task_id, (ok, place, epoch)) for task_id, ok, place, epoch in kept)

    def engine_gone(self, eid: int) -> list[tuple]:
        """Engine `eid` went away: work that ran there can no longer be followed."""
        self.gone.add(eid)
        self.epoch[eid] = self.epoch.get(eid, 0) + 1
        out, doomed = [], deque()
        for task_id in sorted(self.placed.pop(eid, ())):
            w = self.waiting.get(task_id)
            if w is None:
                continue
            w.follow.lose(eid)
            state, why = w.verdict()
            if state == "impossible":
                self._doom(w, why, out, doomed)
        return out + self._propagate(doomed)

    def engine_added(self, eid: int) -> None:
        """An engine registered with id `eid` (new, or a restarted one)."""
        self.gone.discard(eid)

    # -- inside -----------------------------------------------------------------------------

    def _propagate(self, work: deque) -> list[tuple]:
        """Resolve the edges into each finished (or doomed) task, breadth first: no recursion,
        so a long chain of doomed tasks cannot overflow the stack."""
        out = []
        while work:
            done, ok, place = work.popleft()
            for task_id in self.dependents.pop(done, ()):
                w = self.waiting.get(task_id)
                if w is None:
                    continue  # released already (all=False), or doomed, or aborted
                for need in w.needs():
                    if done in need.left:
                        need.see(done, ok, place)
                self._place(w)
                state, detail = w.verdict()
                if state == "impossible":
                    self._doom(w, detail, out, work)
                elif state == "ready":
                    del self.waiting[task_id]
                    self._unplace(w)
                    out.append((task_id, "ready", detail))
        return out

    def _doom(self, w: _Waiter, why: str, out: list, work: deque) -> None:
        del self.waiting[w.task_id]
        self._unplace(w)
        self.open.discard(w.task_id)
        self._record(w.task_id, False, None)
        out.append((w.task_id, "impossible", why))
        work.append((w.task_id, False, None))

    def _doom_new(self, task_id: str, why: str, state: str = "impossible"):
        """`state`: "impossible", or "invalid" for a dependency on no known task."""
        self.open.discard(task_id)
        self._record(task_id, False, None)  # its own dependents, if any, fail the same way
        return state, why

    def _record(self, task_id: str, ok: bool, place: int | None) -> None:
        self.outcomes[task_id] = (ok, place, self.epoch.get(place, 0))
        while len(self.outcomes) > self.keep:
            self.outcomes.popitem(last=False)

    def _live(self, eid: int | None, epoch: int) -> int | None:
        """`eid` if the engine a task ran on is still there (not gone, not restarted since)."""
        if eid is None or eid in self.gone or self.epoch.get(eid, 0) != epoch:
            return None
        return eid

    def _place(self, w: _Waiter) -> None:
        for eid in w.follow.places if w.follow is not None else ():
            self.placed.setdefault(eid, set()).add(w.task_id)

    def _unplace(self, w: _Waiter) -> None:
        for eid in w.follow.places if w.follow is not None else ():
            tasks = self.placed.get(eid)
            if tasks is not None:
                tasks.discard(w.task_id)
                if not tasks:
                    del self.placed[eid]
