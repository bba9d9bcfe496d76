"""`deconvnet synth` killed, run twice at once, and the permissions of what it makes (#13
items 2 and 6). The kill is real: a child process SIGKILLs itself in the middle."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from deconvnet.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"


def _child(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_killed_synth_leaves_a_staging_folder_that_the_next_one_removes(tmp_path):
    root = tmp_path / "data"
    child = _child(f"""
        import os, signal
        import deconvnet.data.synthetic as synthetic

        written = []
        original = synthetic.write_jpeg

        def write_then_die(*args, **kwargs):
            written.append(original(*args, **kwargs))
            if len(written) == 3:  # kill -9 in the middle of the tree
                os.kill(os.getpid(), signal.SIGKILL)

        synthetic.write_jpeg = write_then_die
        synthetic.generate({str(root)!r}, num_images=6, size=48)
    """)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    devkit = root / "VOCdevkit"
    assert [p.name.startswith(".VOC2012.partial-") for p in devkit.iterdir() if p.name != ".lock"] == [True]

    assert main(["synth", "--root", str(root), "--images", "6", "--size", "48"]) == 0
    assert sorted(p.name for p in devkit.iterdir()) == ["VOC2012"]  # staging and lock gone
    voc = devkit / "VOC2012"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(voc.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


def test_a_second_synth_on_the_same_folder_stops_with_one_line(tmp_path, capsys):
    root = tmp_path / "data"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = root / "VOCdevkit" / ".lock"
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(),
                                    "what": "synthetic data generation"}))
        assert main(["synth", "--root", str(root), "--images", "4", "--size", "48"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {owner.pid}" in err and str(root / "VOCdevkit") in err
        assert not (root / "VOCdevkit" / "VOC2012").exists()
    finally:
        owner.kill()
        owner.wait()
    # its owner gone, the lock is stale: the next synth runs
    assert main(["synth", "--root", str(root), "--images", "4", "--size", "48"]) == 0
    assert (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").is_file()
