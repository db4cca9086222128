"""The run folder: built in a staging folder, moved into place only when the run has finished, with one owner.

A crash never leaves a half-written run folder, and ``--overwrite`` replaces an earlier run only once the new
one is complete (the earlier folder is kept until then). ``RunLock`` makes one process the owner of a run folder
from start-up to the final rename: a second process on the same folder is refused with a message naming the
owner, and a lock left by a process that died (SIGKILL, power loss) is detected and taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from ..fileio import replace_folder

__all__ = ["FINISHED_MARKER", "RunLock", "check_output_dir", "finalize_run_dir", "lock_path", "staging_dir"]

FINISHED_MARKER = "metrics.json"


def staging_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".incomplete")


def check_output_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds a finished run (unless ``overwrite``) or files that are not a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"output path '{run_dir}' exists and is not a folder; choose another output_dir")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    is_run = (run_dir / "config.yaml").is_file()
    if not is_run:
        raise RunFolderError(f"output folder '{run_dir}' exists and is not a refcal_zoo run folder; "
                             "choose another output_dir")
    if not overwrite:
        what = "a finished run" if (run_dir / FINISHED_MARKER).is_file() else "an earlier run"
        raise RunFolderError(f"output folder '{run_dir}' already holds {what}; pass --overwrite to replace it "
                             "(kept until the new run finishes) or set output_dir=...")


def finalize_run_dir(staging: Path, run_dir: Path, overwrite: bool = True) -> None:
    """Move the finished staging folder into place, replacing an earlier run only now.

    Without ``overwrite`` a non-empty ``run_dir`` that appeared after the start-up check is never replaced: the
    error names the staging folder, which keeps the new run."""
    if not overwrite and run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunFolderError(f"output folder '{run_dir}' was filled by another process while this run trained; "
                             f"nothing was replaced: this run is complete in '{staging}' (move it yourself)")
    replace_folder(staging, run_dir)


def lock_path(run_dir: Path) -> Path:
    """The lock file of ``run_dir``: a sibling, so it exists before the folder does and survives the rename."""
    return run_dir.with_name(f".{run_dir.name}.lock")


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), which tells a live owner from a later process with its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote ``owner`` may still run (unknown hosts count as alive)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    started = owner.get("start_time")
    return started is None or _start_time(pid) in (None, started)


def _link_or_create(tmp: Path, path: Path) -> None:
    """Make ``path`` appear with ``tmp``'s content, atomically; ``FileExistsError`` if it exists already."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: exclusive create (content follows at once)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(tmp.read_bytes())


class RunLock:
    """Exclusive ownership of a run folder: ``with RunLock(run_dir): ...``.

    The lock file (``.<name>.lock`` beside the folder) appears atomically and complete (written to a temporary
    file, then hard-linked into place, which fails if it exists). It holds the owner's pid, host, process start
    time and command line, and is removed on exit. A lock whose process is gone (same host, pid not running or
    running a later process) is stale and taken over; any other lock refuses with ``RunFolderError`` naming the
    owner. A folder that cannot be created or written fails here, before any training, as a ``RunFolderError``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = lock_path(self.run_dir)
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _start_time(os.getpid()),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": list(sys.argv)}
        self._held = False

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.new-{os.getpid()}")
            tmp.write_text(json.dumps(self.record) + "\n")
            try:
                self._take(tmp)
            finally:
                tmp.unlink(missing_ok=True)
            return self
        except OSError as exc:
            raise RunFolderError(f"cannot write the output folder '{self.run_dir}': {exc.strerror or exc}; "
                                 "choose a writable output_dir") from None

    def _take(self, tmp: Path) -> None:
        for _ in range(3):  # a stale lock is removed, then the atomic link is tried again
            try:
                _link_or_create(tmp, self.path)
            except FileExistsError:
                owner = self._read(self.path)
                if owner is not None and _alive(owner):
                    raise RunFolderError(
                        f"output folder '{self.run_dir}' is in use by process {owner.get('pid')} on "
                        f"{owner.get('host')} (started {owner.get('started')}); wait for it or choose another "
                        f"output_dir (if that process is gone, remove {self.path})") from None
                self._break_stale(owner)
                continue
            self._held = True
            return
        raise RunFolderError(f"could not take the lock {self.path} (another process keeps re-creating it); "
                             "choose another output_dir")

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def _break_stale(self, seen: dict[str, Any] | None) -> None:
        """Remove the stale lock ``seen``; a lock that changed meanwhile (a new owner) is put back untouched."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return  # another process removed it first
        if self._read(aside) != seen:
            try:
                os.link(aside, self.path)  # a new owner's lock: restore it (fails if yet another exists)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self._held and self._read(self.path) == self.record:
            self.path.unlink(missing_ok=True)
        self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
