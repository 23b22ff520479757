"""Safe outputs: atomic files and folders, our own marker, a lock per output, and checks before any work.

Rules (the README's "What happens on bad input" lists what a user sees):
- every file is written to a temporary sibling and renamed into place (`atomic_file`, `write_json`);
- an output folder is built in a temporary sibling `.<name>.tmp-*` and renamed to its place at the end
  (`output_folder`); a failure, Ctrl-C or SIGTERM removes the temporary folder;
- every folder we write carries `.neuroal-jax.json`, the list of the files we wrote. `force` replaces an
  existing folder only if it holds nothing else (`check_replaceable`): a folder without the marker,
  or with a file we did not write, is never deleted;
- one run at a time per output: `output_lock` holds `.<name>.lock` (flock) next to it; the holder then
  removes temporary folders that killed runs of ours left behind (`clean_stale`);
- `check_out` / `check_json_out` reject an output that would hold an input, the current folder or one
  above it, or a place that cannot be written, before any work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import OutputError

MARKER = ".neuroal-jax.json"
#: How a model's weights are written: dense safetensors, or compressed-tensors' sparse bitmask (converters.compressed).
SAVE_FORMATS = ("dense", "compressed")
TOOL = "neuroal-jax"


# ---------------------------------------------------------------- files

@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary sibling of `path` for writing; it replaces `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_safe(obj):
    """Recursively convert NumPy/JAX values, tuples, paths and dataclasses to plain JSON types.

    Non-finite floats become None (strict JSON); dict keys become strings.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(dataclasses.asdict(obj))
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "__array__"):  # numpy / jax arrays
        arr = np.asarray(obj)
        return json_safe(arr.item() if arr.ndim == 0 else arr.tolist())
    return str(obj)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write `obj` as strict JSON (NumPy values, paths and dataclasses converted), atomically."""
    with atomic_file(path) as f:
        f.write(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
    return Path(path)


# ---------------------------------------------------------------- our marker

def write_marker(folder: Path, kind: str, files: list[str] | None = None) -> None:
    """Mark `folder` as ours; `files` (relative paths) is what a finished output holds."""
    from .. import __version__
    write_json(folder / MARKER, {"tool": TOOL, "version": __version__, "kind": kind,
                                 **({"files": files} if files is not None else {"state": "writing"})})


def read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == TOOL else None


def files_under(folder: Path) -> list[str]:
    """Relative paths of every file (and link) under `folder`, except the marker."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out += [str(rel / f) if str(rel) != "." else f for f in files]
        out += [str(rel / d) if str(rel) != "." else d for d in dirs if os.path.islink(os.path.join(root, d))]
    return sorted(f for f in out if f != MARKER)


def foreign_files(folder: Path) -> list[str] | None:
    """Files under an existing folder that we did not write; None when the folder is not ours at all
    (no marker) and not empty. A folder without our marker is never walked (it may be a whole home folder)."""
    marker = read_marker(folder)
    if marker is None:
        return None if any(Path(folder).iterdir()) else []
    known = set(marker.get("files") or [])
    return [f for f in files_under(folder) if f not in known]


def check_replaceable(folder: Path, flag: str = "--out") -> None:
    """Raise OutputError unless `folder` holds only what neuroal-jax wrote there (or nothing)."""
    foreign = foreign_files(folder)
    if foreign is None:
        raise OutputError(f"{flag} {folder} exists and was not written by neuroal-jax (it has no {MARKER}); "
                          f"--force replaces only neuroal-jax's own output folders: choose another {flag}, "
                          "or move it away yourself")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} files)" if len(foreign) > 5 else "")
        raise OutputError(f"{flag} {folder} holds files neuroal-jax did not write ({shown}); --force replaces "
                          f"only neuroal-jax's own output: choose another {flag}, or move them away yourself")


# ---------------------------------------------------------------- checks before any work

def _probe_writable(target: Path, flag: str, shown: Path) -> None:
    """Create and remove a folder next to `target` (in its nearest existing ancestor)."""
    anc = target.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"cannot write {flag} {shown}: {anc} is not a folder")
    try:
        probe = anc / f".neuroal-jax-probe-{os.getpid()}-{secrets.token_hex(3)}"
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise OutputError(f"cannot write {flag} {shown}: {e.strerror or e} ({anc})") from None


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def check_out(out: str | os.PathLike | None, force: bool, inputs: Iterable[tuple[str, str | os.PathLike]] = (),
              flag: str = "--out") -> Path | None:
    """Validate an output folder before any work: not the current folder or above it, not holding an input
    (`inputs`: (flag, path) pairs), writable; an existing one needs `force` and must be ours."""
    if out is None:
        return None
    out = Path(os.path.expanduser(os.fspath(out)))
    if not out.name or out.name in (".", ".."):
        out_abs = _absolute(out)
    else:
        out_abs = _absolute(out.parent) / out.name
    cwd = Path.cwd().resolve()
    if out_abs == cwd or out_abs in cwd.parents:
        raise OutputError(f"{flag} {out} is the current folder or one that contains it; "
                          "give a new folder for the output")
    for name, path in inputs:
        p = _absolute(path)
        if p == out_abs or out_abs in p.parents:
            raise OutputError(f"{flag} {out} holds an input of this run ({name} {path}); choose another {flag}")
        if p in out_abs.parents:
            raise OutputError(f"{flag} {out} is inside an input of this run ({name} {path}), which must stay as it "
                              f"is; choose a {flag} outside it")
    if out.is_symlink():
        raise OutputError(f"{flag} {out} is a symbolic link; give a folder path")
    check_unlocked(out)
    check_existing(out, force, flag)
    _probe_writable(out_abs, flag, out)
    return out


def check_existing(out: Path, force: bool, flag: str = "--out") -> None:
    """An existing `out` must be a folder, `force` must be given, and it must be ours to replace."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{flag} {out} exists and is not a folder")
    if not force:
        raise FileExistsError(f"output folder {out} already exists; pass --force (force=True) to replace it")
    check_replaceable(out, flag)


def write_result_json(path: str | os.PathLike, result: dict) -> Path:
    """A command's --json result, marked as ours so that a later run may replace it."""
    return write_json(path, {"tool": TOOL, **result})


def check_json_out(path: str | os.PathLike | None, flag: str = "--json") -> Path | None:
    """Validate a JSON result path: its folder exists and is writable; an existing file must be one of ours."""
    if path is None:
        return None
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {flag} {path}: the folder {path.parent} does not exist")
    if path.name == MARKER:
        raise OutputError(f"{flag} {path} is the marker of a neuroal-jax output folder (the list of its files), "
                          f"not a result file; choose another path")
    if path.exists():
        try:
            ours = path.is_file() and json.loads(path.read_text()).get("tool") == TOOL
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise OutputError(f"{flag} {path} exists and was not written by neuroal-jax; choose another path")
    _probe_writable(path, flag, path)
    return path


# ---------------------------------------------------------------- one run per output

def sibling(out: Path, suffix: str) -> Path:
    return out.parent / f".{out.name}.{suffix}"


#: The lock files this process holds (`output_lock` is re-entrant within a process).
_HELD: set[Path] = set()


def _locked_by_another(out: Path, path: Path) -> OutputError:
    return OutputError(f"another neuroal-jax run is writing {out} (it holds {path}); wait for it to finish or "
                       "choose another output")


def check_unlocked(out: Path) -> None:
    """An OutputError when another process holds `out`'s lock (checked before any work; `output_lock` takes it)."""
    path = sibling(Path(out), "lock")
    if path.absolute() in _HELD:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise _locked_by_another(out, path) from None
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold `.<name>.lock` next to `out` for the block; another run on the same output is an error. Re-entrant:
    a block inside one that holds the lock already just runs."""
    out = Path(out)
    path = sibling(out, "lock")
    if path.absolute() in _HELD:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise _locked_by_another(out, path) from None
            raise
        try:  # the file may have been removed by the run that held it: lock the one that is there
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _HELD.add(path.absolute())
    try:
        clean_stale(out)
        yield
    finally:
        _HELD.discard(path.absolute())
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def clean_stale(out: Path) -> None:
    """Remove the temporary folders that interrupted runs of ours left next to `out` (call with the lock held)."""
    prefixes = (sibling(out, "tmp-").name, sibling(out, "old-").name)
    for p in out.parent.iterdir():
        if p.name.startswith(prefixes) and p.is_dir() and not p.is_symlink() and (
                read_marker(p) is not None or _only_marker_temps(p)):
            shutil.rmtree(p, ignore_errors=True)


def _only_marker_temps(folder: Path) -> bool:
    """Empty, or holding only unfinished marker files: a run killed between creating the folder and marking it."""
    return all(c.is_file() and c.name.startswith(f".{MARKER}.tmp") for c in folder.iterdir())


# ---------------------------------------------------------------- folders

def new_folder(path: Path, kind: str) -> Path:
    """mkdir `path` (mode from the umask, like any folder the user makes) and mark it as ours."""
    path.mkdir(parents=True)
    write_marker(path, kind)
    return path


def temp_sibling(out: Path, kind: str) -> Path:
    return new_folder(sibling(out, f"tmp-{os.getpid()}-{secrets.token_hex(3)}"), kind)


def publish(folder: Path, out: Path, kind: str) -> None:
    """Record what `folder` holds in its marker and rename it to `out`, replacing an earlier output of ours."""
    write_marker(folder, kind, files_under(folder))
    old = None
    if out.exists() or out.is_symlink():
        check_replaceable(out)
        old = sibling(out, f"old-{os.getpid()}")
        os.replace(out, old)
    os.replace(folder, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_ours(folder: Path) -> None:
    """Delete a folder we wrote (it carries our marker); anything else is an error."""
    if read_marker(folder) is None:
        raise OutputError(f"{folder} was not written by neuroal-jax (no {MARKER}); not removing it")
    shutil.rmtree(folder)


@contextlib.contextmanager
def output_folder(out: str | os.PathLike, force: bool = False, kind: str = "output"):
    """Yield a new temporary folder that becomes `out` only if the block succeeds (see the module rules).
    An existing `out` is an error unless `force`, and even then must be an output of ours."""
    out = Path(out)
    check_existing(out, force)
    with output_lock(out):
        check_existing(out, force)  # again, now that no other run can be writing it
        tmp = temp_sibling(out, kind)
        try:
            yield tmp
            publish(tmp, out, kind)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
