"""The run folder: one owner at a time, records written only once the run is accepted, and a
completion record that says whether the run is finished for the config asked for.

A train / eval / predict run's ``output_dir`` holds, besides its outputs:

    .lock           owner's pid and host while a run works in the folder (:mod:`.lock`)
    config.yaml     the resolved config (+ git revision), written once the config is
                    validated and the checkpoints it reads are accepted
    complete.json   written last, atomically: {"kind", "config_hash", "step", "data",
                    "inputs"}; the run is complete only when it matches what is asked now

``config_hash`` covers the keys that change what a run computes (:func:`identity`): not the
hardware, logging or speed settings, nor ``schedule.max_steps`` (recorded as ``step``), so a
training can continue on other devices or to more steps. ``data`` is the fingerprint of the
data (:mod:`deconvnet.data.fingerprint`); ``inputs`` identifies the checkpoints an
evaluation read. Anything less than a match resumes (training) or runs again (evaluation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deconvnet.config import ConfigError, git_revision
from deconvnet.runtime.atomic import remove_stale_temporaries, write_text_atomic
from deconvnet.runtime.lock import FolderLock

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
COMPLETION_FILE = "complete.json"

# Keys that may differ between two runs in one folder: where and how fast it runs, how it
# logs, where the data is (the data itself is compared by its fingerprint).
FREE_KEYS = (
    "name", "output_dir", "resume", "logger", "data.root", "trainer.accelerator", "trainer.devices",
    "trainer.num_nodes", "trainer.strategy", "trainer.log_every_n_steps",
    "trainer.limit_val_batches", "data.num_workers", "data.proposals.workers",
    "data.proposals.cache_dir", "crf.workers", "eval.proposal_batch_size",
    "data.cache_dir", "data.store", "data.check", "data.official_root",
)
# Sections a kind of run does not read, and keys it may change (training: more steps).
UNUSED = {"train": ("eval", "crf", "schedule.max_steps"), "eval": ("optim", "schedule"),
          "predict": ("optim", "schedule")}


# named first when configs differ: they say at once that it is another kind of run
HEADLINE_KEYS = ("task", "model.name", "data.kind")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of a nested mapping (lists are leaves)."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    out: dict[str, Any] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _ignored(key: str, kind: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in (*FREE_KEYS, *UNUSED.get(kind, ())))


def identity(cfg: DictConfig | Mapping, kind: str) -> dict[str, Any]:
    """The keys of ``cfg`` that decide what a ``kind`` run computes (see module doc)."""
    return {k: v for k, v in sorted(flatten(cfg).items()) if not _ignored(k, kind)}


def config_hash(cfg: DictConfig | Mapping, kind: str) -> str:
    text = json.dumps(identity(cfg, kind), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_keys(stored: Mapping, asked: Mapping, kind: str) -> list[str]:
    """Keys (in both configs) whose values differ, as 'key: old -> new'."""
    old, new = identity(stored, kind), identity(asked, kind)
    keys = sorted(old.keys() & new.keys(), key=lambda k: (k not in HEADLINE_KEYS, k))
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys if old[k] != new[k]]


def file_identity(paths: Iterable[str | Path | None]) -> dict[str, str]:
    """{path: size and modification time} of input files (checkpoints an evaluation reads):
    a retrained checkpoint at the same path makes an old result incomplete."""
    out = {}
    for path in paths:
        if path:
            try:
                stat = Path(path).stat()
            except OSError:
                out[str(path)] = "missing"  # the reader of the file says what is wrong
                continue
            out[str(path)] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return out


class RunFolder:
    """The records of one run folder (see the module doc). ``kind``: train | eval | predict."""

    def __init__(self, output_dir: str | Path, kind: str) -> None:
        self.path = Path(output_dir)
        self.kind = kind
        self.config_path = self.path / CONFIG_FILE
        self.completion_path = self.path / COMPLETION_FILE

    def lock(self) -> FolderLock:
        """The folder's lock (use as a context manager around the whole run)."""
        return FolderLock(self.path, what=f"{self.kind} run")

    def remove_leftovers(self, *subfolders: str) -> None:
        """Temporary files of writers that were killed, in the folder and ``subfolders``."""
        for folder in (self.path, *(self.path / s for s in subfolders)):
            for path in remove_stale_temporaries(folder):
                log.info("removed %s, left by an interrupted run", path)

    # ---- the config --------------------------------------------------------------------

    def stored_config(self) -> dict | None:
        """The config of the run that wrote this folder, or None."""
        if not self.config_path.is_file():
            return None
        try:
            stored = OmegaConf.to_container(OmegaConf.load(self.config_path), resolve=False)
        except Exception as err:  # a hand-edited or foreign file
            raise ConfigError(f"{self.config_path} is not a readable config ({err}); delete it or "
                              "use another output_dir") from None
        return stored if isinstance(stored, dict) else None

    def check_same_config(self, cfg: DictConfig) -> None:
        """Refuse a config that differs from the one this folder's run was made with
        (``resume=never`` starts afresh instead)."""
        if str(cfg.resume) == "never":
            return
        stored = self.stored_config()
        if stored is None:
            return
        differ = differing_keys(stored, cfg, self.kind)
        if differ:
            shown = "; ".join(differ[:6]) + ("; ..." if len(differ) > 6 else "")
            article = "an" if self.kind[0] in "aeiou" else "a"
            raise ConfigError(
                f"{self.path} holds {article} {self.kind} run made with another config ({shown}). Use another "
                "output_dir, set the same values, or pass resume=never to start afresh in this folder"
            )

    def write_config(self, cfg: DictConfig) -> Path:
        """config.yaml: the resolved config with the git revision (atomically)."""
        text = f"# git revision: {git_revision()}\n" + OmegaConf.to_yaml(cfg, resolve=True)
        return write_text_atomic(self.config_path, text)

    # ---- completion --------------------------------------------------------------------

    def completion(self) -> dict | None:
        try:
            record = json.loads(self.completion_path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def is_complete(self, cfg: DictConfig, data: Mapping | None = None, step: int | None = None,
                    inputs: Mapping | None = None) -> bool:
        """Whether the completion record matches ``cfg`` (and the data, the step reached at
        least ``step``, the input files), so the run need not be run again."""
        record = self.completion()
        if record is None or record.get("kind") != self.kind:
            return False
        if record.get("config_hash") != config_hash(cfg, self.kind):
            return False
        if data is not None and record.get("data") != json.loads(json.dumps(dict(data))):
            return False
        if step is not None and int(record.get("step", -1)) < step:
            return False
        return inputs is None or record.get("inputs", {}) == dict(inputs)

    def mark_complete(self, cfg: DictConfig, data: Mapping | None = None, step: int | None = None,
                      inputs: Mapping | None = None) -> Path:
        """Write the completion record (the run's last write)."""
        record = {"kind": self.kind, "config_hash": config_hash(cfg, self.kind), "step": step,
                  "data": dict(data) if data is not None else None, "inputs": dict(inputs or {}),
                  "git_revision": git_revision()}
        return write_text_atomic(self.completion_path, json.dumps(record, indent=2, sort_keys=True) + "\n")

    def mark_incomplete(self) -> None:
        """Forget that the folder's run was complete (a new run is about to replace it)."""
        self.completion_path.unlink(missing_ok=True)

    def remove(self, *names: str) -> None:
        """Delete outputs of a previous run (``resume=never``)."""
        for name in names:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
