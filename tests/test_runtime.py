"""The runtime layer's pieces on their own: atomic writes (a full disk keeps the previous
file), temporary files of killed writers, the folder lock, config differences."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deconvnet.runtime.atomic import atomic_write, remove_stale_temporaries, write_text_atomic
from deconvnet.runtime.lock import FolderLock, FolderLockedError
from deconvnet.runtime.run_folder import differing_keys


def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("the previous, complete results\n")
    with pytest.raises(OSError) as caught, atomic_write(target, "w") as handle:
        handle.write("half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == "the previous, complete results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_temporary_names_are_unique_and_files_get_normal_permissions(tmp_path):
    target = tmp_path / "config.yaml"
    with atomic_write(target, "w") as first, atomic_write(target, "w") as second:  # two DDP ranks
        assert first.name != second.name
        first.write("a")
        second.write("b")
    assert target.read_text() in ("a", "b")
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == 0o666 & ~umask


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.ckpt.{dead.pid}.x1y2z3.tmp"
    live = tmp_path / f".last.ckpt.{os.getpid()}.a1b2c3.tmp"
    other = tmp_path / ".hidden.tmp"  # not one of ours: never touched
    for path in (stale, live, other):
        path.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_lock_is_exclusive_reentrant_and_released(tmp_path):
    write_text_atomic(tmp_path / "x", "")
    with FolderLock(tmp_path, "train run"):
        with FolderLock(tmp_path, "train run"):  # the same process again: fine
            pass
        assert (tmp_path / ".lock").exists()
        code = ("import sys; sys.path.insert(0, sys.argv[2]);"
                "from deconvnet.runtime.lock import FolderLock;"
                "FolderLock(sys.argv[1], 'eval run').acquire()")
        child = subprocess.run([sys.executable, "-c", code, str(tmp_path),
                                str(Path(__file__).resolve().parents[1] / "src")],
                               capture_output=True, text=True)
        assert child.returncode != 0 and FolderLockedError.__name__ in child.stderr
        assert f"pid {os.getpid()}" in child.stderr
    assert not (tmp_path / ".lock").exists()


def test_config_differences_name_the_keys_that_matter():
    stored = {"name": "a", "optim": {"lr": 0.01}, "trainer": {"devices": 1}, "schedule": {"max_steps": 5},
              "eval": {"split": "val"}, "task": "deconvnet"}
    asked = {"name": "b", "optim": {"lr": 0.1}, "trainer": {"devices": 4}, "schedule": {"max_steps": 9},
             "eval": {"split": "test"}, "task": "fcn8s"}
    # training: devices, name, more steps and eval settings may change; lr and task may not
    assert differing_keys(stored, asked, "train") == ["task: 'deconvnet' -> 'fcn8s'", "optim.lr: 0.01 -> 0.1"]
    assert differing_keys(stored, asked, "eval") == ["task: 'deconvnet' -> 'fcn8s'", "eval.split: 'val' -> 'test'"]


def test_a_second_computation_of_one_proposal_cache_stops_at_once(synthetic_voc, tmp_path, capsys):
    """#13.2: two runs computing the same proposal cache both computed and wrote it."""
    import json
    import socket

    from deconvnet.cli import main
    from deconvnet.config import load_config
    from deconvnet.data.proposals import generators
    from deconvnet.data.proposals.cache import cache_path
    from deconvnet.data.proposals.precompute import proposal_parameters

    overrides = [f"data.root={synthetic_voc}", f"data.proposals.cache_dir={tmp_path}",
                 "data.proposals.method=ground_truth", "data.proposals.splits=[val]"]
    cfg = load_config(None, overrides)
    generator = generators.build_generator(cfg)
    path = cache_path(tmp_path, "val", generator.method, proposal_parameters(cfg, generator))
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / f".{path.name}.lock").write_text(json.dumps(
            {"pid": owner.pid, "host": socket.gethostname(), "what": "proposals"}))
        config = tmp_path / "proposals.yaml"
        config.write_text("")
        assert main(["proposals", str(config), *overrides]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {owner.pid}" in err and not path.exists()
    finally:
        owner.kill()
        owner.wait()
    assert main(["proposals", str(config), *overrides]) == 0 and path.is_file()
