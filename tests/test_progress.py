"""What a start shows: a tqdm bar as engines register (a person watching), and why a batch
job waits, updated in place on the bar or written as a line where nobody watches."""

from __future__ import annotations

from ipcluster.progress import Waiting


def test_a_bar_counts_engines_and_shows_why_the_job_waits(capsys):
    waiting = Waiting(4, show_bar=True)
    waiting.registered(0)
    waiting.pending("slurm job 7 pending: Priority, 3 s")
    waiting.registered(3)
    assert waiting.bar.n == 3 and waiting.bar.desc == "slurm job 7 pending: Priority, 3 s"
    waiting.close()
    err = capsys.readouterr().err
    assert "3/4" in err and "slurm job 7 pending: Priority" in err


def test_without_a_watcher_the_pending_line_is_written_when_it_changes(capsys):
    waiting = Waiting(2, show_bar=False, every=60)
    for seconds in (1, 2, 3):
        waiting.pending(f"slurm job 7 pending: Priority, {seconds} s")
    waiting.pending("slurm job 7 pending: Resources, 4 s")
    waiting.registered(1)
    waiting.close()
    assert capsys.readouterr().err.splitlines() == [
        "slurm job 7 pending: Priority, 1 s", "slurm job 7 pending: Resources, 4 s"]


def test_a_bar_is_drawn_for_a_terminal_or_a_notebook_only(monkeypatch):
    import io
    import sys

    from ipcluster import progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file: nobody watches
    assert not progress.interactive()

    class ZMQInteractiveShell:  # what get_ipython() returns in a Jupyter kernel
        pass

    fake = type(sys)("IPython")
    fake.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert progress.interactive()
