"""Keep this process's threads at normal scheduling around video encoders that change it.

SVT-AV1, run as root, switches the thread that opens an encoder to real-time SCHED_FIFO priority 99,
and its own worker threads start with that policy too. On a 2-core machine real-time threads starve
the event loop, the render thread and everything else (seen: a call's first frames never rendered;
in a test run the demo's processes and a headless Chromium spinning). ``scheduling_kept`` wraps
every encoder call: afterwards the calling thread has its policy back and every thread of the
process that a real-time policy reached is put back to SCHED_OTHER.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_REALTIME = tuple(getattr(os, name) for name in ("SCHED_FIFO", "SCHED_RR") if hasattr(os, name))


def demote_realtime_threads() -> int:
    """Put every thread of this process with a real-time policy back to SCHED_OTHER; returns how many."""
    if not _REALTIME or not os.path.isdir("/proc/self/task"):
        return 0
    demoted = 0
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        try:
            if os.sched_getscheduler(tid) in _REALTIME:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                demoted += 1
        except OSError:  # the thread ended meanwhile, or we may not change it
            continue
    if demoted:
        logger.debug("put %d real-time thread(s) back to normal scheduling", demoted)
    return demoted


@contextlib.contextmanager
def scheduling_kept() -> Iterator[None]:
    """Restore the calling thread's policy and priority after the block and demote real-time threads."""
    if not hasattr(os, "sched_getscheduler"):  # not Linux
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy or os.sched_getparam(0) != param:
            os.sched_setscheduler(0, policy, param)
        demote_realtime_threads()
