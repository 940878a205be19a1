"""Client API layer: waiting for a cluster's engines to register, and what a user sees
meanwhile: a progress bar (tqdm, in a terminal and in a notebook) as engines register, and a
line saying why a batch job waits. The start timeout counts run time, not time in the queue.

Where nobody watches (output to a file or a pipe), no bar is drawn; the pending line is still
written to stderr, when it changes and at most once a minute otherwise, so that a log shows it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from ipcluster import launchers
from ipcluster.errors import NoEnginesRegistered
from ipcluster.launchers.base import tail


async def wait_registered(client, launcher: launchers.Launcher, n: int, *, timeout: float,
                          pending_timeout: float | None = None) -> None:
    """Wait until `client` sees `n` engines, which `launcher` started; fail at once, quoting
    its log, when one exits. `timeout` counts from when the engines run: while a batch job
    waits in the queue its wait is shown, for at most `pending_timeout` seconds."""
    waiting = Waiting(n, interactive())
    started, running_since = time.monotonic(), None
    try:
        while True:
            try:
                return await asyncio.to_thread(client.wait_for_engines, n, timeout=0.1)
            except NoEnginesRegistered:
                pass
            waiting.registered(len(client.ids))
            state = await asyncio.to_thread(launcher.state)
            now = time.monotonic()
            if state is launchers.State.FAILED:
                raise NoEnginesRegistered(
                    f"{len(client.ids)} of {n} engines registered; the others exited before "
                    f"registering. The {launcher.name} launcher says: {launcher.failure()}")
            if state is launchers.State.PENDING and running_since is None:
                waiting.pending(launcher.pending())
                if pending_timeout is not None and now - started > pending_timeout:
                    raise NoEnginesRegistered(
                        f"{launcher.pending()}: still waiting in the queue after the "
                        f"pending_timeout of {pending_timeout} s. Try another partition or "
                        f"queue, fewer engines, or a longer pending_timeout (None: no limit)")
                continue
            running_since = now if running_since is None else running_since
            if now - running_since > timeout:
                raise NoEnginesRegistered(
                    f"{len(client.ids)} of {n} engines registered {timeout} s after they "
                    f"started running; {evidence(launcher)}")
    finally:
        waiting.close()


def evidence(launcher: launchers.Launcher) -> str:
    """The tail of the newest engine log, for an error message to quote."""
    logs = [Path(p) for p in launcher.logs() if Path(p).exists()]
    if not logs:
        return "no engine log was written"
    newest = max(logs, key=lambda p: p.stat().st_mtime)
    return f"the engine log {newest} ends with:\n{tail(newest)}"


def interactive() -> bool:
    """A person is watching: a terminal, or a notebook (this process is a Jupyter kernel)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if type(shell).__name__ == "ZMQInteractiveShell":  # ipykernel's shell
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Waiting:
    """Progress of one wait for `n` engines."""

    def __init__(self, n: int, show_bar: bool, every: float = 60.0) -> None:
        self.n, self.show_bar, self.every = n, show_bar, every
        self.bar = None
        self._line = ""  # the last pending line written (without its duration)
        self._written = 0.0

    def registered(self, count: int) -> None:
        if not self.show_bar:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.n, unit="engines", desc="engines registered", file=sys.stderr)
        self.bar.update(min(count, self.n) - self.bar.n)

    def pending(self, line: str | None) -> None:
        if not line:
            return
        if self.bar is not None:
            self.bar.set_description_str(line)
            return
        what = line.rsplit(",", 1)[0]  # without the time waited, which changes every second
        now = time.monotonic()
        if what != self._line or now - self._written >= self.every:
            self._line, self._written = what, now
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
