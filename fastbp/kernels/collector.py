"""Python's garbage collector waits while fastbp's kernels compile.

Why: compiling a training loop builds about a million short-lived Python objects (Numba's IR, types
and LLVM wrappers). Each full collection walks every object of the process, Numba's own registries
included, and a cold first fit ran ten to thirteen of them per process: 1.0-1.2 s of a 10-11 s first
run (benchmarks/NOTES.md). With the collector off during a compilation, the cycles it made are
collected by the first young collection after it.

Only the outermost compilation of a fastbp kernel pauses it (Numba's `numba:compile` event; nested
compilations of callees run inside it); the collector's state is restored when it ends, raised or not.
"""
from __future__ import annotations

import gc

import numba.core.event


class _PauseCollector(numba.core.event.Listener):
    """Turns the collector off at the start of an outermost compilation of a fastbp function, back on at its end."""

    def __init__(self) -> None:
        self._depth = 0  # compilations under way (Numba holds its global compile lock: one thread compiles)
        self._was_enabled = False

    def on_start(self, event) -> None:
        if self._depth == 0 and not _is_fastbps(event):
            return
        if self._depth == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
        self._depth += 1

    def on_end(self, event) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._was_enabled:
            gc.enable()


def _is_fastbps(event) -> bool:
    dispatcher = event.data.get("dispatcher") if isinstance(event.data, dict) else None
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
    return module.startswith("fastbp.")


def pause_while_compiling() -> None:
    """Register the listener (once; `fastbp.kernels` calls it at import)."""
    numba.core.event.register("numba:compile", _LISTENER)


_LISTENER = _PauseCollector()
