"""Worker processes that die with their parent: no orphan after a ``kill -9``.

A process pool's workers outlive a parent killed with SIGKILL (it gets no chance to stop
them), and so does multiprocessing's resource tracker, which waits for every holder of its
pipe, workers included. Calling :func:`die_with_parent` first thing in each worker (the
pool's ``initializer``) ends the worker when its parent goes:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker at once;
- everywhere, a daemon thread that polls the parent's pid and exits the worker when the
  parent is gone (the fallback where prctl does not exist, and the guard for a parent that
  died before prctl was called).

With the workers gone, the resource tracker sees its pipe close and exits by itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 1.0


def _parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid


def _set_pdeathsig() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent exits; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    while _parent_alive(parent_pid):
        time.sleep(POLL_SECONDS)
    os._exit(1)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this (worker) process end when its parent does; see the module doc.

    parent_pid: the parent's pid as the parent saw it (pass ``os.getpid()`` in the pool's
    ``initargs``); default: multiprocessing's record of the parent, else the current one.
    """
    if parent_pid is None:
        parent = multiprocessing.parent_process()
        parent_pid = parent.pid if parent is not None and parent.pid else os.getppid()
    _set_pdeathsig()
    if not _parent_alive(parent_pid):  # the parent died before the kernel could be asked
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="die-with-parent", daemon=True).start()
