"""Where Numba keeps fastbp's compiled kernels, and how: a private directory named by a digest of their
source, files that carry their own checksum, and nothing cached when no directory is safe.

Keyed directory. Numba invalidates a cached function when *its own* file changes, not when a kernel it
calls in another module does; a stale caller then runs old callee code (seen here as a segfault after an
edit to `dense.py`, and as silently different weights). Keying the directory on every kernel module's
source (and the Numba version) makes a stale cache impossible — under `NUMBA_CACHE_DIR` too, which
chooses where the keyed directory goes, not whether it is keyed.

Safe directory. A cache file is pickled code that the process loads and runs, so a directory another
user can write into lets them run code as this one (a predictable `<tempdir>/fastbp-<uid>` created first
by someone else, say). fastbp creates its directories with mode 0700 and uses one only if it is owned
by the current user and not writable by group or others; it skips any other with one warning, and
when none qualifies its kernels are compiled in memory (Numba's `NullCache`).

Self-healing files. Every index (.nbi) and data (.nbc) file fastbp writes is framed as
MAGIC + sha256(body) + body, and each data file also holds the index key it was written for. A file cut
short (a process killed mid-write, a full disk), garbled, or overwritten by another process's
compilation of another signature (numba#10128) fails the check: it is deleted and its kernel recompiled,
with one warning, instead of an `UnpicklingError` at the first call or, worse, damaged machine code
that unpickles fine. Writes of one function's files hold a lock file, so two processes never
interleave them.

Mechanism: `configure_cache` chooses the directory and, while the kernel modules are imported, points
Numba's documented locator hook (`numba.config.CACHE_LOCATOR_CLASSES`) at a placeholder that touches no
file; `attach_caches` then gives every fastbp dispatcher a `CheckedCache` in that directory (or a
`NullCache`) and restores the hook, so other Numba functions of the process cache as usual.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import stat
import sys
import tempfile
import warnings
from pathlib import Path

import numba
import numba.core.event
from numba.core import caching, config
from numba.core.runtime import rtsys
from numba.core.dispatcher import Dispatcher

#: first bytes of every file fastbp's cache writes; the digest of the rest follows
MAGIC = b"fastbp-cache-1\n"
_DIGEST_BYTES = 32  # sha256

#: the directory chosen by `configure_cache` (None: compile in memory)
_directory: str | None = None
#: numba.config.CACHE_LOCATOR_CLASSES as it was before `configure_cache`
_saved_locators: str | None = None
#: warnings already given in this process, by kind: each is said once
_warned: set[str] = set()


class CacheWarning(UserWarning):
    """fastbp's compile cache skipped a directory or rebuilt a damaged file; results are unaffected."""


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, CacheWarning, stacklevel=3)

from .target import VECTOR_REGISTERS, VECTOR_WIDTH


def kernels_digest() -> str:
    """sha256 over the source of every kernel module, the Numba version, the vector width
    (`target.VECTOR_WIDTH`) and the vector register count that sizes the register tiles
    (`target.VECTOR_REGISTERS`): a cache built for one width or one set of tiles is never loaded for another.
    (Numba's own key holds the CPU's features, from which the register count comes; the digest says so
    itself, so that no way of choosing the features can pair one build's tiles with another's.)"""
    digest = hashlib.sha256(f"{numba.__version__} {VECTOR_WIDTH} {VECTOR_REGISTERS}".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


# -- the directory ----------------------------------------------------------------------------------

def unsafe_reason(path: Path) -> str | None:
    """Why another local user could plant files in directory `path` (None if they cannot): it is not
    owned by the current user, or group or others may write to it. Symbolic links are followed."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if os.name == "posix" and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o}; `chmod go-w` it to use it)"
    return None


def _candidates(name: str) -> list[tuple[Path, Path]]:
    """(place, place/name) to try, in order: under NUMBA_CACHE_DIR, the user cache, the temp dir.
    `place` is fastbp's own directory there; it and the keyed directory in it must both be safe."""
    places = [Path(os.environ["NUMBA_CACHE_DIR"]) / "fastbp"] if os.environ.get("NUMBA_CACHE_DIR") else []
    try:
        places.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastbp")
    except RuntimeError:  # no home directory at all
        pass
    places.append(Path(tempfile.gettempdir()) / f"fastbp-{getattr(os, 'getuid', lambda: 'user')()}")
    return [(place, place / name) for place in places]


def _prepare(place: Path, directory: Path) -> str | None:
    """Create place and directory (mode 0700) if missing; None if directory is safe and writable,
    else why not ("unwritable: ..." when the file system refuses, which is no reason to warn)."""
    try:
        place.parent.mkdir(parents=True, exist_ok=True)
        for path in (place, directory):
            path.mkdir(mode=0o700, exist_ok=True)
            reason = unsafe_reason(path)
            if reason:
                return f"{path} is {reason}"
        with tempfile.TemporaryFile(dir=directory):
            return None
    except OSError as error:
        return f"unwritable: {error}"


def choose_directory() -> tuple[str | None, list[str]]:
    """(the first safe, writable candidate directory or None, why each unsafe one before it was refused)."""
    refused = []
    for place, directory in _candidates(f"kernels-{kernels_digest()}"):
        reason = _prepare(place, directory)
        if reason is None:
            return str(directory), refused
        if not reason.startswith("unwritable"):
            refused.append(reason)
    return None, refused


def configure_cache() -> str | None:
    """Choose fastbp's cache directory (`choose_directory`), warning once if an unsafe one was skipped,
    and defer the kernels' caches to `attach_caches` while their modules are imported.

    Returns the directory, or None when none is safe and writable: the kernels are then compiled in
    memory, in every process.
    """
    global _directory, _saved_locators
    _directory, refused = choose_directory()
    if refused:
        fallback = f"caching in {_directory}" if _directory else "compiling the kernels in memory (no cache)"
        _warn_once("unsafe", "fastbp: skipped cache directories another user could write to: "
                             + "; ".join(refused) + f". {fallback}")
    if _saved_locators is None:
        _saved_locators = config.CACHE_LOCATOR_CLASSES
    config.CACHE_LOCATOR_CLASSES = f"{__name__}.{_ImportLocator.__name__}"
    return _directory


def attach_caches() -> int:
    """Give every fastbp kernel (a dispatcher made with cache=True) a `CheckedCache` in the chosen
    directory, or a `NullCache` if there is none; restore Numba's locator setting. Returns how many."""
    global _saved_locators
    if _saved_locators is not None:
        config.CACHE_LOCATOR_CLASSES = _saved_locators
        _saved_locators = None
    count = 0
    for dispatcher in fastbp_dispatchers():
        if isinstance(dispatcher._cache, caching.FunctionCache) and not isinstance(dispatcher._cache, CheckedCache):
            attach(dispatcher, _directory)
            count += 1
    return count


def fastbp_dispatchers() -> list[Dispatcher]:
    """Every Numba dispatcher defined in an imported fastbp module, once each."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name == "fastbp" or name.startswith("fastbp."):
            for value in vars(module).values():
                if isinstance(value, Dispatcher) and value.py_func.__module__.startswith("fastbp"):
                    found[id(value)] = value
    return list(found.values())


def attach(dispatcher: Dispatcher, directory: str | None) -> None:
    """Cache `dispatcher`'s compiled code in `directory` with checked files (None: no cache)."""
    dispatcher._cache = CheckedCache(dispatcher.py_func, directory) if directory else caching.NullCache()


def cache_directory() -> str | None:
    """The directory fastbp's kernels are cached in, or None when they are compiled in memory."""
    return _directory


# -- Numba's cache, with checked files ----------------------------------------------------------------

class _ImportLocator(caching._CacheLocator):
    """Stands in while the kernel modules are imported: a dispatcher made with cache=True builds its
    cache object at once, and Numba's own locators would create directories (or fail) on the way."""

    def __init__(self, py_file: str = "") -> None:
        self._py_file = py_file

    @classmethod
    def from_function(cls, py_func, py_file):
        return cls(py_file)

    def ensure_cache_path(self):
        raise OSError("fastbp's kernel caches are attached after import (fastbp.kernels.cache.attach_caches)")

    def get_cache_path(self):
        return os.devnull

    def get_source_stamp(self):
        return None

    def get_disambiguator(self):
        return ""


class _DirectoryLocator(caching.UserProvidedCacheLocator):
    """Numba's NUMBA_CACHE_DIR locator, for a directory given here rather than in numba.config."""

    def __init__(self, py_func, py_file, directory: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(directory, self.get_suitable_cache_subpath(py_file))

    def ensure_cache_path(self):
        os.makedirs(self._cache_path, mode=0o700, exist_ok=True)


class _Impl(caching.CompileResultCacheImpl):
    """Numba's CompileResult (de)serialisation, with the locator chosen by fastbp."""

    def __init__(self, py_func, directory: str) -> None:
        saved, config.CACHE_LOCATOR_CLASSES = config.CACHE_LOCATOR_CLASSES, None
        self._directory = directory
        try:
            super().__init__(py_func)  # finds the locator in _locator_classes
        finally:
            config.CACHE_LOCATOR_CLASSES = saved

    @property
    def _locator_classes(self):
        directory = self._directory

        class Locator(_DirectoryLocator):
            @classmethod
            def from_function(cls, py_func, py_file):
                return cls(py_func, py_file, directory)
        return [Locator]


def frame(body: bytes) -> bytes:
    """MAGIC + sha256(body) + body: what fastbp writes to a cache file."""
    return MAGIC + hashlib.sha256(body).digest() + body


def unframe(raw: bytes) -> bytes | None:
    """The body of a framed file, or None when the file is not intact (cut short, garbled, foreign)."""
    head = len(MAGIC) + _DIGEST_BYTES
    if len(raw) < head or not raw.startswith(MAGIC):
        return None
    body = raw[head:]
    return body if hashlib.sha256(body).digest() == raw[len(MAGIC):head] else None


class CheckedFile(caching.IndexDataCacheFile):
    """Numba's index + data files, each framed with a digest; data files also store their key."""

    def _read_body(self, path: str) -> bytes | None:
        """The checked body of the file at path; None if it is missing, or damaged (then deleted)."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        body = unframe(raw)
        if body is None:
            self._discard(path)
        return body

    def _discard(self, path: str) -> None:
        _warn_once("damaged", f"fastbp: the compile cache file {path} is damaged (cut short or garbled); "
                              "it was deleted and its kernel is compiled again")
        with contextlib.suppress(OSError):
            os.unlink(path)

    def _load_index(self):
        body = self._read_body(self._index_path)
        if body is None:
            return {}
        try:
            stream = io.BytesIO(body)
            if pickle.load(stream) != self._version:
                return {}
            stamp, overloads = pickle.loads(stream.read())
        except Exception:  # digest fine, content not Numba's: written by something else
            self._discard(self._index_path)
            return {}
        return overloads if stamp == self._source_stamp else {}

    def _save_index(self, overloads):
        body = pickle.dumps(self._version, protocol=-1) + self._dump((self._source_stamp, overloads))
        with self._open_for_write(self._index_path) as f:
            f.write(frame(body))

    def load(self, key):
        name = self._load_index().get(key)
        if name is None:
            return None
        body = self._read_body(self._data_path(name))
        if body is None:
            return None
        try:
            stored_key, data = pickle.loads(body)
        except Exception:
            self._discard(self._data_path(name))
            return None
        # another signature's code, written under the same name by a concurrent writer: recompile
        return data if stored_key == key else None

    def save(self, key, data):
        with self._lock():
            super().save(key, (key, data))  # reads the index afresh under the lock, then writes both files

    def _save_data(self, name, data):
        with self._open_for_write(self._data_path(name)) as f:
            f.write(frame(self._dump(data)))

    @contextlib.contextmanager
    def _lock(self):
        """An exclusive lock on this function's files across processes (POSIX; elsewhere a no-op)."""
        try:
            import fcntl
        except ImportError:
            yield
            return
        with open(self._index_path[:-len(".nbi")] + ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class CheckedCache(caching.FunctionCache):
    """Numba's per-function cache in `directory`, with `CheckedFile`s. Whatever goes wrong with the
    files — damaged, unreadable, unwritable (a full disk) — costs a compilation, never the call.

    A miss takes this function's compile lock (a lock file next to its index) until the compiled code
    is saved: a second process that misses too waits, then loads what the first saved, so no two
    processes compile one function into one cache at the same moment (numba#10128) and neither does
    the work twice. Locks are taken caller before callee, and the call graph has no cycles, so two
    processes cannot wait for each other.
    """

    def __init__(self, py_func, directory: str) -> None:
        self._name = repr(py_func)
        self._py_func = py_func
        self._impl = _Impl(py_func, directory)
        self._cache_path = self._impl.locator.get_cache_path()
        self._cache_file = CheckedFile(cache_path=self._cache_path, filename_base=self._impl.filename_base,
                                       source_stamp=self._impl.locator.get_source_stamp())
        self._lock_path = os.path.join(self._cache_path, self._impl.filename_base + ".compiling")
        self.enable()

    def load_overload(self, sig, target_context):
        cres = self._checked_load(sig, target_context)
        if cres is None and _compile_locks.acquire(self._lock_path):
            cres = self._checked_load(sig, target_context)  # saved by whoever held the lock meanwhile
            if cres is not None:
                _compile_locks.release(self._lock_path)
        return cres

    def _checked_load(self, sig, target_context):
        try:
            # Numba's own load_overload first refreshes the target context, importing every typing and
            # lowering registry (scipy.linalg for BLAS among them): half of a warm start (benchmarks/NOTES.md).
            # Code loaded from the cache needs only the runtime (NRT) those registries would start; a
            # compilation still refreshes the context itself (Numba's compiler does, before typing).
            rtsys.initialize(target_context)
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
        except Exception as error:  # noqa: BLE001  a cache must never fail the call: compile instead
            _warn_once("unloadable", f"fastbp: could not load {self._name} from the compile cache "
                                     f"({type(error).__name__}: {error}); compiling it again")
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except OSError as error:
            _warn_once("unwritable", f"fastbp: could not write the compile cache in {self._cache_path} "
                                     f"({error}); the kernels compiled now are kept in memory only")
        finally:
            _compile_locks.release(self._lock_path)


class _CompileLocks:
    """This process's compile locks (`CheckedCache`): an exclusive `flock` per function, counted so
    that taking one twice in a process is harmless. The kernel frees one of a process that dies."""

    def __init__(self) -> None:
        self._held: dict[str, list] = {}  # path -> [open file, count]

    def acquire(self, path: str) -> bool:
        """Take the lock at path, waiting for another process that holds it; False if locks are
        unavailable (no fcntl, or the file cannot be opened): then the caller just compiles."""
        if path in self._held:
            self._held[path][1] += 1
            return True
        try:
            import fcntl
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)  # a kernel's first miss in a new cache
            handle = open(path, "a+b")
        except (ImportError, OSError):
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            handle.close()
            return False
        self._held[path] = [handle, 1]
        return True

    def release(self, path: str) -> None:
        held = self._held.get(path)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del self._held[path]
            held[0].close()  # closing the file releases the flock

    def release_failed(self, event) -> None:
        """A compilation that raised saves nothing: free its function's lock (a `numba:compile` end). One that
        succeeded keeps it until its code is saved (`CheckedCache.save_overload`), after the event's end."""
        cache = getattr(event.data.get("dispatcher"), "_cache", None) if isinstance(event.data, dict) else None
        if _raised(event) and isinstance(cache, CheckedCache):
            self.release(cache._lock_path)


def _raised(event) -> bool:
    """Whether a `numba:compile` end event carries an exception, read off the event's details. Not Numba's
    `Event.is_failed`, which answers the opposite (it tests that the details are None, Numba 0.68): taken as
    is, it freed the lock of every compilation that succeeded before its code was saved, and a second process
    waiting for that lock found nothing to load and compiled the kernel again."""
    details = getattr(event, "_exc_details", None)
    return details is not None and details[0] is not None


_compile_locks = _CompileLocks()


class _FailedCompileListener(numba.core.event.Listener):
    def on_start(self, event):
        pass

    def on_end(self, event):
        _compile_locks.release_failed(event)


numba.core.event.register("numba:compile", _FailedCompileListener())


def has_compiled(kernel, signature: tuple | None = None) -> bool:
    """Whether Numba's on-disk cache holds compiled code of `kernel` (a `cache=True` dispatcher) for
    this install, this source and this CPU, in any signature or in `signature` (a tuple of Numba types).
    False means that its first call in this process (with those types) compiles it, tens of seconds for a
    training loop. Reads Numba's index through its private cache objects, whose keys are (signature, the
    CPU's (triple, name, features), code hashes): an entry compiled for another CPU is not loaded here, so
    it does not count. A Numba without them gives False."""
    try:
        cpu = kernel.targetctx.codegen().magic_tuple()
        return any(key[1] == cpu and signature in (None, key[0]) for key in kernel._cache._cache_file._load_index())
    except (AttributeError, OSError, IndexError, TypeError):
        return False
