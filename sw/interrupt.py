"""SIGTERM for the command line: raised as :class:`Terminated` in the main thread, so that every ``finally`` and
staged output (:func:`sparsyn.sw.outdir.staged_output`) cleans up — and remembered, because Python ignores an
exception raised while a ``__del__`` runs: a signal landing there would otherwise be lost and the command would
finish and commit its output. :func:`check_terminated` (called before an output folder is put in place, and when
the command returns) raises it again."""
from __future__ import annotations


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` / staged output cleans up."""


_requested = False


def on_sigterm(signum, frame):
    """The SIGTERM handler: remember it, then raise :class:`Terminated`."""
    global _requested
    _requested = True
    raise Terminated()


def check_terminated() -> None:
    """Raise :class:`Terminated` if a SIGTERM arrived (also one whose exception was swallowed)."""
    if _requested:
        raise Terminated()


def reset() -> None:
    """Forget an earlier SIGTERM (a new command starts)."""
    global _requested
    _requested = False
