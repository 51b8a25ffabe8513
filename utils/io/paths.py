"""Run folders: naming (``runs/detect/exp``, ``exp2``, ``exp3`` ... as YOLOv5 does), creation, and the
lock that keeps two live runs out of one folder."""
from __future__ import annotations

import os
from pathlib import Path

from utils.core.errors import UserError


def increment_path(path: str | Path, exist_ok: bool = False, sep: str = "", mkdir: bool = False) -> Path:
    """Return ``path`` if it is free (or ``exist_ok``), else the first free ``{path}{sep}{n}`` for n = 2, 3, ...

    A file keeps its suffix after the number (``last.pt`` -> ``last2.pt``). With ``mkdir`` the
    resulting path is created as a directory (parents included).
    """
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        n = 2
        while Path(f"{stem}{sep}{n}{suffix}").exists():
            n += 1
        path = Path(f"{stem}{sep}{n}{suffix}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def newest_file(folder: str | Path, pattern: str) -> Path | None:
    """The most recently modified file under ``folder`` matching the glob ``pattern`` (e.g. ``*/weights/best.pt``,
    the latest run's best.pt as YOLOv5's ``get_latest_run`` finds last.pt); None when there is none."""
    found = [p for p in Path(folder).glob(pattern) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class RunDirError(UserError):
    """A run folder that cannot be created or is held by another live run."""


def make_run_dir(path: str | Path, exist_ok: bool = False) -> tuple[Path, bool]:
    """Create ``project/name`` (incremented unless ``exist_ok``) -> ``(folder, created)``.

    ``created`` is False when ``exist_ok`` reused an existing folder. An unwritable ``--project``
    is a RunDirError naming it, not an OSError traceback.
    """
    try:
        folder = increment_path(path, exist_ok=exist_ok)
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"--project: cannot create the run folder {Path(path)} ({e.strerror or e})") from None
    return folder, created


def write_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (temp file beside it, then ``os.replace``): a reader, a
    kill or a full disk sees the old file or the new one, never a half-written one. A failed write is
    a RunDirError naming the file; the old file is kept."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise RunDirError(f"cannot write {path} ({e.strerror or e})") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only folder fails the clean-up the same way; nothing was written then
            pass


def remove_empty_dirs(*folders: Path) -> None:
    """Remove each folder (in the order given) if it exists and is empty; anything else is kept."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` is running (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class RunLock:
    """``<run folder>/.lock`` holding the pid of the one process that writes the folder.

    A second run (``--exist-ok`` with the same name, or ``--resume`` of a live run) is refused
    while that process lives; a lock left by a killed process is taken over.
    """

    def __init__(self, folder: Path) -> None:
        self.folder, self.file, self.held = folder, folder / ".lock", False

    def acquire(self) -> "RunLock":
        for _ in range(3):  # a stale lock is removed, then created again
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.file.read_text().strip() or -1)
                except (OSError, ValueError):
                    pid = -1  # half-written by a process killed right after creating it
                if pid > 0 and pid != os.getpid() and pid_alive(pid):
                    raise RunDirError(f"{self.folder} is in use by the running process {pid} (lock file "
                                      f"{self.file}); wait for it to end, or choose another --name") from None
                self.file.unlink(missing_ok=True)
                continue
            except OSError as e:
                raise RunDirError(f"--project: cannot write to the run folder {self.folder} "
                                  f"({e.strerror or e})") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise RunDirError(f"{self.folder}: cannot take the lock file {self.file}")

    def release(self) -> None:
        if self.held:
            self.file.unlink(missing_ok=True)
            self.held = False
