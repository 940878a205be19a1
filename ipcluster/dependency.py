"""Client API layer: `Dependency`, the earlier tasks a load-balanced task waits for.

    view.set_flags(after=[ar1, ar2])               # after: run once those succeeded
    with view.temp_flags(follow=ar_setup):         # follow: run where those ran
        view.apply_async(use_setup)
    Dependency(ars, all=False, failure=True)       # once any of them finished, either way

The controller holds the task until its dependency is met, and fails it with
`ImpossibleDependency` as soon as it cannot be met.
"""

from __future__ import annotations

from ipcluster.asyncresult import AsyncResult

__all__ = ["Dependency"]


class Dependency(set):
    """A set of task ids (msg ids) and when they count, as ipyparallel's Dependency.

    `dependencies`: msg ids, `AsyncResult`s, or lists of them (or another Dependency).
    `all`: met when all of them finished (True) or when any one did (False).
    `success`, `failure`: which outcomes count. With the defaults (all, success only) the task
    fails with `ImpossibleDependency` as soon as one of them fails.
    Plain lists and AsyncResults given as `after`/`follow` mean these defaults.
    """

    def __init__(self, dependencies=(), all: bool = True, success: bool = True,
                 failure: bool = False) -> None:
        if not (success or failure):
            raise ValueError("a Dependency must count successes, failures or both "
                             "(success=False and failure=False can never be met)")
        super().__init__(_ids(dependencies))
        self.all, self.success, self.failure = bool(all), bool(success), bool(failure)

    @classmethod
    def of(cls, value) -> Dependency:
        """`value` as a Dependency: itself if it is one, else with the defaults."""
        return value if isinstance(value, Dependency) else cls(value)

    def to_wire(self) -> dict | None:
        """The plain map the apply header carries; None if it names no task."""
        if not self:
            return None
        return {"ids": sorted(self), "all": self.all, "success": self.success,
                "failure": self.failure}

    def check(self, completed, failed=()) -> bool:
        """Whether the dependency is met, given the ids of tasks that succeeded and failed."""
        if not self:
            return True
        against = (set(completed) if self.success else set()) | (
            set(failed) if self.failure else set())
        return self.issubset(against) if self.all else not self.isdisjoint(against)

    def unreachable(self, completed, failed=()) -> bool:
        """Whether it can no longer be met, given the ids that succeeded and failed."""
        if not self:
            return False
        against = (set(completed) if not self.success else set()) | (
            set(failed) if not self.failure else set())
        return not self.isdisjoint(against) if self.all else self.issubset(against)

    def __repr__(self) -> str:
        return (f"Dependency({sorted(self)!r}, all={self.all}, success={self.success}, "
                f"failure={self.failure})")


def _ids(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, AsyncResult):
        return list(value.msg_ids)
    if value is None:
        return []
    try:
        items = iter(value)
    except TypeError:
        raise TypeError(f"a dependency is a msg id, an AsyncResult or a list of them, "
                        f"not {type(value).__name__}") from None
    return [i for item in items for i in _ids(item)]
