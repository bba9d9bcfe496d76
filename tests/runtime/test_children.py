"""#13 item 6: the CRF and proposal pools' workers (and multiprocessing's resource tracker)
do not outlive a parent killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 60.0  # a bound, not a measurement: the test polls and ends as soon as all are gone

# Each script starts a pool whose jobs never finish, prints the pids of its workers and of
# the resource tracker on one line, then waits to be killed.
CRF_POOL = """
    import numpy as np
    from deconvnet.inference import crf
    import sleepy

    crf.dense_crf = sleepy.forever  # the job the workers run: never ends
    pool = crf.CRFPool(crf.PRESETS["official"], workers=2)
    for k in range(2):
        pool.submit(k, np.zeros((4, 4, 3), np.uint8), np.ones((2, 4, 4), np.float32))
"""
PROPOSAL_POOL = """
    import threading
    from deconvnet.data.proposals.precompute import compute_proposals
    import sleepy

    threading.Thread(target=compute_proposals, daemon=True,
                     args=(sleepy.Reader(), sleepy.SleepyGenerator(), 0, 5, 2)).start()
"""
REPORT = """
    # wait until both workers run their job (a worker killed while it still starts up would
    # die of its broken pipe anyway, proving nothing)
    deadline = time.time() + 120
    while len(glob.glob("running-*")) < 2 and time.time() < deadline:
        time.sleep(0.05)
    tracker = resource_tracker._resource_tracker._pid
    print(*[p.pid for p in active_children()], *([tracker] if tracker else []), flush=True)
    time.sleep(3600)
"""
SLEEPY = """
import os
import time


def forever(*args):
    open(f"running-{os.getpid()}", "w").close()
    time.sleep(3600)


class Reader:
    split = "train"
    ids = [f"img{i}" for i in range(8)]
    sizes = [(32, 32)] * 8

    def __len__(self):
        return 8


class SleepyGenerator:
    method = "sleepy"

    def check(self, reader):
        pass

    def propose(self, reader, i):
        forever()
"""


def _script(body: str) -> str:
    """A main module that spawn children can import without re-running it."""
    inner = textwrap.indent(textwrap.dedent(body) + textwrap.dedent(REPORT), "    ")
    return ("import glob\nimport time\nfrom multiprocessing import active_children, resource_tracker\n\n"
            "if __name__ == '__main__':\n" + inner)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _kill_parent_and_watch(script: str, tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    (tmp_path / "parent.py").write_text(_script(script))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(tmp_path)])}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path)
    try:
        children = [int(p) for p in parent.stdout.readline().split()]
        assert len(children) >= 2, "the pool did not start its workers"
        assert all(_alive(p) for p in children)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + DEADLINE_S
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = [p for p in children if _alive(p)]
        for pid in orphans:  # leave nothing behind even when the test fails
            os.kill(pid, signal.SIGKILL)
        assert not orphans, f"orphans after kill -9 of their parent: {orphans}"
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_crf_workers_die_with_a_killed_evaluation(tmp_path):
    _kill_parent_and_watch(CRF_POOL, tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_proposal_workers_die_with_a_killed_precomputation(tmp_path):
    _kill_parent_and_watch(PROPOSAL_POOL, tmp_path)


def test_the_watchdog_alone_ends_a_worker_whose_parent_is_gone(monkeypatch):
    """Where prctl does not exist (macOS), the pid watchdog does the job."""
    from deconvnet.runtime import children

    exits = []
    monkeypatch.setattr(children, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(children.os, "_exit", lambda code: exits.append(code))
    children._watch(parent_pid=-1)  # returns once it has "exited": no process has pid -1
    assert exits == [1]
