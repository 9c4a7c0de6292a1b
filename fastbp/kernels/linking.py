"""Big callees join a caller's LLVM module after its optimisation, so that LLVM optimises each kernel once.

Numba compiles every function into an LLVM module of its own, runs LLVM's O3 pipeline over it and turns
it into machine code. A caller's module gets a copy of each callee's module, already optimised, linked in
before its own O3 run, so that LLVM may inline the callees. So a kernel's code was optimised once in its
own module and once more in every module above it: its parallel loop's two wrappers, the kernel, the
kernels and wrappers that call it, up to `train_epoch`. In a cold reference fit, LLVM's module passes took
13 s of 52, most of it on such copies (benchmarks/NOTES.md).

A callee whose module holds more than LATE_LINK_INSTRUCTIONS instructions is either far above what
LLVM's inliner takes (O3's threshold of 250 cost units is about 50 instructions) or a small function that
calls such big ones once, as a kernel calls its parallel loop: linking it first bought little but a
second optimisation of code that was already optimised. `LateLinkLibrary` links such callees after the
optimisation instead: the caller's own code and its small callees are optimised together as before, and
the big callees join the optimised module as they are, before the machine code is generated. The module
still holds the code of every callee, as Numba's cache needs (a cached function is loaded on its own,
without its callees).

The machine code of a `LateLinkLibrary` waits until something needs it: a pointer to one of its functions,
or its object code for the cache. The wrappers around each parallel loop (Numba's `_GufuncWrapper` and
`parallelgufuncwrapper` libraries) need neither: Numba only links them into the kernel that runs the loop, and
their own machine code, generated at once as Numba does, was never run (2.7 s of a 51 s cold fit).

Only fastbp's compilations use it (`target.WideVectorCompiler` gives their target context
`late_link_codegen`); other Numba code in the process is compiled as before.
"""
from __future__ import annotations

import functools
import weakref

from numba.core.codegen import CPUCodeLibrary, JITCodeLibrary, JITCPUCodegen
from numba.core.compiler_lock import global_compiler_lock

try:
    from llvmlite.binding import newpassmanagers
except ImportError:  # an llvmlite older than Numba 0.63's
    newpassmanagers = None

#: a callee whose module holds more instructions than this is linked after the caller's optimisation
LATE_LINK_INSTRUCTIONS = 400
#: how Numba's mangled names of fastbp's functions begin (`_ZN` then each part of the qualified name, length first)
_FASTBP_PREFIX = "_ZN6fastbp"
#: Numba's wrappers of a function for calls from Python and C, which no compiled caller calls
_WRAPPER_PREFIXES = ("cpython.", "cfunc.")
#: the internals of Numba and llvmlite that late linking relies on (all there in Numba 0.63 to 0.68);
#: without them every library links as Numba's own do
SUPPORTED = (newpassmanagers is not None and hasattr(JITCPUCodegen, "_pass_builder")
             and all(hasattr(JITCodeLibrary, name) for name in ("_optimize_final_module", "_get_module_for_linking")))
#: ... and that deferring the machine code relies on (Numba 0.63 to 0.68)
DEFERRED = SUPPORTED and all(hasattr(CPUCodeLibrary, name) for name in (
    "_finalize_final_module", "_finalize_dynamic_globals", "_verify_declare_only_symbols", "_get_compiled_object"))


def instructions(library, limit: int | None = None) -> int:
    """Instructions in `library`'s module for linking, its wrappers aside; counting stops above `limit`.

    Why the limit: llvmlite hands over one instruction at a time, and the modules of the wrappers above
    the kernels hold tens of thousands (counting them all took 3 s of a 47 s cold fit)."""
    count = 0
    for fn in library._get_module_for_linking().functions:
        if not fn.is_declaration and not fn.name.startswith(_WRAPPER_PREFIXES):
            for block in fn.blocks:
                for _ in block.instructions:
                    count += 1
                    if limit is not None and count > limit:
                        return count
    return count


def is_fastbps(library) -> bool:
    """Whether `library` holds fastbp's code: compiled in this process by fastbp's compiler (a `LateLinkLibrary`),
    or loaded from the cache (it defines functions of fastbp's). Numba's own libraries, such as the runtime's
    reference counting, which LLVM must inline for Numba to prune it, link as they always did."""
    return isinstance(library, LateLinkLibrary) or any(
        fn.name.startswith(_FASTBP_PREFIX) for fn in library._get_module_for_linking().functions
        if not fn.is_declaration)


def _is_late(library, limit: int) -> bool:
    """Whether `library` is linked after its caller's optimisation: fastbp's, and more than `limit` instructions."""
    return is_fastbps(library) and instructions(library, limit) > limit


class LateLinkLibrary(JITCodeLibrary):
    """Numba's JIT code library, linking its big callees after optimising its module, and generating its machine
    code only when something needs it (the module's docstring)."""

    _machine_code_pending = False

    def finalize(self):
        linking = getattr(self, "_linking_libraries", None)
        if not SUPPORTED or not isinstance(linking, list):
            return super().finalize()
        unique = list(dict.fromkeys(linking))
        self._late = [lib for lib in unique if _is_late(lib, LATE_LINK_INSTRUCTIONS)]
        self._linking_libraries = [lib for lib in unique if lib not in self._late]
        try:
            super().finalize()  # links the small callees, optimises (below), then generates the machine code
        finally:
            self._linking_libraries = linking

    def _optimize_final_module(self):
        super()._optimize_final_module()
        late = getattr(self, "_late", ())
        for library in late:
            self._reload_init.update(library._reload_init)  # as Numba's linking does: it starts the thread pool
            self._final_module.link_in(library._get_module_for_linking(), preserve=True)
        if late:  # what nothing calls (the callees' own wrappers), dropped as the O3 run would have
            _remove_unused(self._final_module, self._codegen)

    def _finalize_final_module(self):
        """Numba's `CPUCodeLibrary._finalize_final_module` without its last step, adding the module to the JIT
        and generating its machine code: `_machine_code` does that when something first needs it."""
        if not DEFERRED:
            return super()._finalize_final_module()
        self._finalize_dynamic_globals()
        self._verify_declare_only_symbols()
        self._final_module._CPUCodeLibrary__library = weakref.proxy(self)  # for Numba's object-cache hooks
        self._finalized = True
        self._machine_code_pending = True

    def _machine_code(self):
        """Add the module to the JIT and generate its machine code, once (Numba's last step of finalising)."""
        with global_compiler_lock:
            if self._machine_code_pending:
                self._machine_code_pending = False
                cleanup = self._codegen._add_module(self._final_module)
                if cleanup:
                    weakref.finalize(self, cleanup)
                self._finalize_specific()

    def get_pointer_to_function(self, name):
        self._ensure_finalized()
        self._machine_code()
        return super().get_pointer_to_function(name)

    def _get_compiled_object(self):  # the object code that Numba's cache saves
        self._machine_code()
        return super()._get_compiled_object()


def _remove_unused(module, codegen) -> None:
    """LLVM's global dead-code elimination on `module`: functions and globals that nothing references."""
    manager = newpassmanagers.create_new_module_pass_manager()
    manager.add_global_dead_code_eliminate_pass()
    manager.run(module, codegen._pass_builder())


class LateLinkCodegen:
    """Numba's CPU code generator `base`, whose new libraries are `LateLinkLibrary`; all else is base's."""

    def __init__(self, base):
        self._base = base

    def __getattr__(self, name):
        return getattr(self._base, name)

    def create_library(self, name, **kwargs):
        return LateLinkLibrary(self._base, name, **kwargs)


@functools.cache
def late_link_codegen(base) -> LateLinkCodegen:
    """The `LateLinkCodegen` of Numba's code generator `base` (one per generator)."""
    return LateLinkCodegen(base)
