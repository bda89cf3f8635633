"""Atomic writes of files and folders, and the clean-up of what a killed write leaves behind.

Every artefact a run leaves (checkpoints through ``checkpointing.AtomicCheckpointIO``, length
tables through ``LengthTable.save``, the exported adapter folder through ``ExportAdapter``) is
first written under a temporary name in the same folder, flushed to disk, then renamed into
place, so a reader (or a resumed run) sees the old artefact or the new one, never half of one.

Temporary names are ``.<name>.tmp-<pid>``; a folder being replaced is moved aside to
``.<name>.old-<pid>`` for the instant between two renames. A process killed mid-write leaves
such an entry; :func:`clean_stale` (called when the next run starts) deletes the ones whose
process is gone, and moves an ``.old`` folder back if its replacement never arrived. Only
these two patterns are ever touched, and only in the run's own output folders.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


class ArtefactWriteError(OSError):
    """An artefact could not be written (disk full, read-only or missing folder); names the folder."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]" prefix
        return self.strerror or super().__str__()


def temp_path(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """``dir/name`` -> ``dir/.name.tmp-<pid>``: same folder, so the final rename stays atomic."""
    path = Path(path)
    return path.parent / f".{path.name}.{kind}-{os.getpid()}"


def write_error(what: str, path: str | os.PathLike, error: OSError, folder: Path | None = None) -> ArtefactWriteError:
    """One line: which artefact, which folder, why, and what to do."""
    folder = Path(path).parent if folder is None else folder
    why = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        advice = f"the disk holding {folder} is full: free space, then resume with --ckpt_path last"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = f"{folder} is not writable: fix its permissions or choose another folder"
    else:
        advice = f"check that {folder} exists and is writable"
    return ArtefactWriteError(error.errno, f"cannot write the {what} {path}: {why}; {advice}")


def write_file(path: str | os.PathLike, write: Callable[[BinaryIO], None], what: str = "file") -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it onto ``path``.

    On any failure the temp file is removed and ``path`` keeps its old content; an OSError is
    raised again as :class:`ArtefactWriteError` naming the folder.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, ArtefactWriteError):
            raise
        raise write_error(what, path, e) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


@contextmanager
def folder_in_place(path: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; when the block ends without error it
    replaces ``path`` (an old folder there is moved aside, then deleted)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as e:
        raise write_error(what, path, e) from e
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync_file(file)
        replace_folder(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, ArtefactWriteError):
            raise
        raise write_error(what, path, e) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(src: Path, dst: Path) -> None:
    """Rename folder ``src`` onto ``dst``. An existing ``dst`` goes to ``.dst.old-<pid>`` first
    (a kill between the two renames is undone by :func:`clean_stale`), then is deleted."""
    if dst.exists() and not dst.is_dir():
        raise ArtefactWriteError(errno.ENOTDIR, f"cannot write the folder {dst}: a file of that name is in the way")
    old = temp_path(dst, "old")
    if dst.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(dst, old)
    os.rename(src, dst)
    fsync_dir(dst.parent)
    if old.exists():
        shutil.rmtree(old)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of an earlier process that had our pid (containers reuse them)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` entries of dead processes in
    ``folder`` (not below it); an ``.old`` folder whose ``<name>`` is missing is moved back.
    Returns what was removed or restored. Best effort: an entry that cannot be removed stays."""
    folder = Path(folder)
    done: list[Path] = []
    if not folder.is_dir():
        return done
    for entry in sorted(folder.iterdir()):
        match = _STALE.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        target = folder / match["name"]
        try:
            if match["kind"] == "old" and not target.exists():
                os.rename(entry, target)  # killed between the two renames: the old one was still whole
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        done.append(entry)
    return done


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Fail at start-up, not after hours of training, when ``folder`` cannot take new files.

    Probes by writing (and removing) a file in ``folder``, or in its nearest existing parent
    when it does not exist yet: nothing is created that the run would not create anyway.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ArtefactWriteError(errno.ENOTDIR, f"cannot write the {what} {folder}: {existing} is a file, not a folder")
    probe = temp_path(existing / "write-probe")
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise write_error(what, folder, e, folder=existing) from None


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename durable; best effort (not every OS can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
