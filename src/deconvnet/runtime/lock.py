"""An exclusive lock on a folder (a run's output_dir, a dataset being written, a cache).

``with FolderLock(folder, what="training run"):`` creates ``<folder>/.lock`` holding the
owner's pid and host (``O_CREAT | O_EXCL``: only one process can create it) and removes it
on exit. A second process that finds the lock stops at once with a
:class:`FolderLockedError` naming the folder and the running pid. A lock whose owner is gone
(killed with -9, machine rebooted) is stale and is taken over; a lock from another host
cannot be checked, so it is respected and the message says how to clear it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import TracebackType

from deconvnet.errors import UserError

LOCK_NAME = ".lock"


class FolderLockedError(UserError):
    """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """Exclusive ownership of ``folder`` while the ``with`` block runs (see module doc).

    ``name``: the lock file's name (several locks in one folder, e.g. one per cache file).
    Re-entrant within one process: a nested ``FolderLock`` on a lock this process already
    holds does nothing.
    """

    _held: set[Path] = set()  # lock files this process holds

    def __init__(self, folder: str | Path, what: str = "run", name: str = LOCK_NAME) -> None:
        self.folder = Path(folder).absolute()
        self.path = self.folder / name
        self.what = what
        self._owner = False

    def owner(self) -> dict | None:
        """The lock file's record ({"pid", "host", "what"}), or None when there is none."""
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written by a process killed while creating it
        return record if isinstance(record, dict) else {}

    def _stale(self, record: dict) -> bool:
        if not record:
            return True
        if record.get("host") != socket.gethostname():
            return False
        pid = int(record.get("pid", -1))
        return pid <= 0 or not _alive(pid)

    def acquire(self) -> FolderLock:
        if self.path in FolderLock._held:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the folder {self.folder}: {err.strerror}; choose a "
                            "writable location") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                current = self.owner()
                if current is not None and not self._stale(current):
                    raise FolderLockedError(self._busy_message(current)) from None
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            except OSError as err:
                raise UserError(f"cannot write in {self.folder}: {err.strerror}; choose a "
                                "writable folder") from None
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(record))
            self._owner = True
            FolderLock._held.add(self.path)
            return self
        raise FolderLockedError(f"{self.folder} is being locked and unlocked by other processes; try again")

    def _busy_message(self, owner: dict) -> str:
        where = owner.get("host")
        pid = owner.get("pid")
        what = str(owner.get("what", "run"))
        user = f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"
        if where != socket.gethostname():
            return (f"{self.folder} is in use by {user} on host {where} "
                    f"(pid {pid}); wait for it to end, or delete {self.path} if that run is gone")
        return (f"{self.folder} is in use by {user} running as pid {pid}; "
                "wait for it to end or choose another folder")

    def release(self) -> None:
        if not self._owner:
            return
        current = self.owner()
        if current and current.get("pid") == os.getpid() and current.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        FolderLock._held.discard(self.path)
        self._owner = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()
