"""Which Numba threading layer runs fastbp's parallel kernels, chosen once, when fastbp's kernels load.

Numba runs every ``prange`` loop on one of three threading layers, and they differ in what they
survive (Numba docs, "The Threading Layers"):

=============  ====================================================  ==========================
layer          two Python threads running parallel kernels at once   ``fork()`` after parallel work
=============  ====================================================  ==========================
``tbb``        safe                                                  safe
``omp``        safe                                                  unsafe with GNU OpenMP (Linux)
``workqueue``  aborts the whole process                              safe
=============  ====================================================  ==========================

A model must be trainable from any Python thread (a web server, a GUI, ``concurrent.futures``),
so unless the user has chosen a layer — ``NUMBA_THREADING_LAYER`` in the environment, or
``numba.config.THREADING_LAYER`` set before importing fastbp — fastbp asks Numba for its
``"threadsafe"`` layer: ``tbb`` when the ``tbb`` package (≥ 2021.6) is installed (fastbp loads the
library pip puts in ``<env>/lib``, which Numba alone does not find in a venv), else ``omp``.
It does so only when one of them actually loads; otherwise it leaves Numba's default, which
falls back to ``workqueue``, and `parallel_section` then runs fastbp's compiled calls one
thread at a time instead of letting the process abort. (Numba's default order, tbb → omp →
workqueue, picks the same layer whenever tbb or omp loads; asking for "threadsafe" keeps that
true when ``NUMBA_THREADING_LAYER_PRIORITY`` puts workqueue first, and states the intent.)

The choice only changes *which* threads run each loop, never the order of any sum, so results
are bit-identical whatever the layer (fastbp's determinism rule, docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sys
import threading
from typing import ContextManager

import numba
from numba.np.ufunc import parallel as _parallel

#: layers that let several Python threads run parallel kernels at once, in Numba's order of preference
THREAD_SAFE_LAYERS = ("tbb", "omp")
#: Numba's settings that can only resolve to a thread-safe layer
_THREAD_SAFE_SETTINGS = {"tbb", "omp", "threadsafe", "safe"}

#: layer -> the extension module of numba.np.ufunc that implements it
_LAYER_MODULES = {"tbb": "tbbpool", "omp": "omppool", "workqueue": "workqueue"}
#: the TBB runtime numba loads, by platform; `pip install tbb` puts it in <environment>/lib
_TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}

_serial_lock = threading.RLock()


def preload_pip_tbb() -> bool:
    """Load the TBB runtime that ``pip install tbb`` put in ``<sys.prefix>/lib``; True if it loaded.

    In a virtual environment that directory is not on the dynamic loader's path, so Numba's own
    ``dlopen("libtbb.so.12")`` fails and it silently uses omp. A library loaded by full path first
    is found by its name afterwards.
    """
    name = _TBB_LIBRARY.get(sys.platform)
    path = os.path.join(sys.prefix, "lib", name) if name else ""
    if not os.path.exists(path):
        return False
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    return True


def layer_loads(layer: str) -> bool:
    """Whether Numba's threading layer `layer` ("tbb", "omp" or "workqueue") can load here."""
    try:
        if layer == "tbb":
            _parallel._check_tbb_version_compatible()  # numba rejects TBB older than 2021.6
        importlib.import_module("numba.np.ufunc." + _LAYER_MODULES[layer])
    except Exception:  # ImportError, OSError from a missing library, AttributeError on another numba
        return False
    return True


def choose_threading_layer() -> str:
    """Ask Numba for a thread-safe layer unless the user chose one; return Numba's setting.

    Leaves everything as it is when the user set ``NUMBA_THREADING_LAYER`` or
    ``numba.config.THREADING_LAYER``, when Numba's threads are already running (the layer is then
    fixed), or when neither tbb nor omp loads. The choice goes into ``os.environ`` too: Numba's
    compiler re-reads every setting from the environment once any ``NUMBA_`` variable has changed
    (``config.reload_config``), which would otherwise put the layer back to "default".

    Returns
    -------
    str
        ``numba.config.THREADING_LAYER`` afterwards: ``"threadsafe"`` when fastbp chose it.
    """
    user_chose = "NUMBA_THREADING_LAYER" in os.environ or numba.config.THREADING_LAYER != "default"
    if user_chose or _parallel._is_initialized:
        return numba.config.THREADING_LAYER
    preload_pip_tbb()
    if any(layer_loads(layer) for layer in THREAD_SAFE_LAYERS):
        numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"] = "threadsafe"
    return numba.config.THREADING_LAYER


def active_layer() -> str | None:
    """The layer Numba runs parallel loops on ("tbb", "omp", "workqueue"), or None before the first one ran."""
    return numba.threading_layer() if _parallel._is_initialized else None


def thread_count() -> int:
    """``numba.get_num_threads()``: the number of threads this Python thread's parallel loops use. Once Numba's
    threads are up it is read directly, 0.1 µs against the public call's 0.7 (two locks): a twentieth of a
    one-row prediction (benchmarks/NOTES.md). The first call starts the threads (`start_threads`)."""
    if not _threads_started:
        start_threads()
    return _parallel._get_num_threads()


def is_thread_safe() -> bool:
    """Whether two Python threads may run fastbp's parallel kernels at the same time."""
    layer = active_layer()
    if layer is not None:
        return layer in THREAD_SAFE_LAYERS
    return str(numba.config.THREADING_LAYER).lower() in _THREAD_SAFE_SETTINGS


#: what `parallel_section` returns on a thread-safe layer: a context that does nothing, made once
_FREELY = contextlib.nullcontext()


def parallel_section() -> ContextManager:
    """Run the enclosed compiled calls alone when the layer is not thread-safe (workqueue), else freely.

    Wrap each call into compiled code that may run a ``prange`` loop (a training epoch, a
    prediction): ``with parallel_section(): ...``. On tbb and omp it returns a context that does nothing,
    made once (a generator-based context manager cost 1.5 µs of a 30-µs single-sample prediction); on
    workqueue, the lock that makes the calls take turns. The first call starts Numba's threads
    (`start_threads`).
    """
    if not _threads_started:
        start_threads()
    return _FREELY if is_thread_safe() else _serial_lock


#: whether `start_threads` has run in this process
_threads_started = False


def start_threads() -> None:
    """Start Numba's threads if they are not running, then undo the nested parallelism that its omp layer turns on.

    When Numba's omp layer starts its threads it sets OpenMP's max-active-levels to the most the runtime supports,
    for the whole process. PyTorch shares that GNU OpenMP runtime when both are loaded, and its MKL calls inside
    its own parallel regions then start nested teams: after one fastbp fit, PyTorch's epochs with tanh or Adam took
    2-10x as long (benchmarks/NOTES.md). fastbp never nests parallel regions, so here the setting goes back
    to OpenMP's default of 1 level, or to ``OMP_MAX_ACTIVE_LEVELS`` if set; ``OMP_NESTED=true`` leaves Numba's.
    Nothing changes on the tbb and workqueue layers, which do not use OpenMP.
    """
    global _threads_started
    numba.get_num_threads()  # starts the threads, once per process
    if numba.threading_layer() == "omp":
        levels = _wanted_openmp_levels()
        if levels is not None:
            set_openmp_max_active_levels(levels)
    _threads_started = True


def _wanted_openmp_levels() -> int | None:
    """The max-active-levels the user asked OpenMP for (1, OpenMP's default, if nothing); None for Numba's."""
    if os.environ.get("OMP_NESTED", "").strip().lower() in {"true", "1", "yes"}:
        return None
    text = os.environ.get("OMP_MAX_ACTIVE_LEVELS", "").strip()
    return int(text) if text.isdigit() else 1


def _openmp_function(name: str):
    """OpenMP's `name` as Numba's omp layer calls it: from the process's global symbols first (where PyTorch puts
    its runtime), else from the runtime the layer loaded itself; None if neither has it."""
    for library in (None, _layer_path("omp")):
        try:
            return getattr(ctypes.CDLL(library), name)
        except (AttributeError, OSError, TypeError):
            continue
    return None


def _layer_path(layer: str) -> str | None:
    """The file of Numba's extension module for threading layer `layer`, if it is loaded."""
    module = sys.modules.get("numba.np.ufunc." + _LAYER_MODULES[layer])
    return getattr(module, "__file__", None)


def openmp_max_active_levels() -> int | None:
    """OpenMP's max-active-levels in the runtime that Numba's omp layer uses; None where there is none."""
    function = _openmp_function("omp_get_max_active_levels")
    return None if function is None else int(function())


def set_openmp_max_active_levels(levels: int) -> None:
    """Set OpenMP's max-active-levels in the runtime that Numba's omp layer uses (nothing if there is none)."""
    function = _openmp_function("omp_set_max_active_levels")
    if function is not None:
        function(ctypes.c_int(levels))


choose_threading_layer()
