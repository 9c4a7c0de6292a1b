"""How wide the vectors are that fastbp's kernels ask LLVM for: the whole vector unit.

LLVM tunes its code for most AVX-512 CPUs (Skylake-X to Sapphire Rapids, Rocket Lake) with the
`prefer-256-bit` feature: its vectorizers then fill 256-bit ymm registers, half of what the CPU
has, and Numba keeps that tuning. fastbp compiles its own functions with the LLVM function
attributes ``"prefer-vector-width"="512"`` and ``"min-legal-vector-width"="512"``, which override
that preference for them alone: other Numba code in the same process is compiled as before.
On a CPU without AVX-512 the attributes change nothing, since LLVM cannot use registers wider
than the CPU's (`tests/test_target.py` checks both, by compiling for named CPUs).

``FASTBP_VECTOR_WIDTH=256`` (or 128) in the environment asks for narrower vectors instead. The
choice is part of the compile cache's key (`cache.kernels_digest`), so a cache built one way is
never loaded the other way.
"""
from __future__ import annotations

import functools
import os

from llvmlite import binding as llvm
from numba.core import config
from numba.core.compiler import Compiler

from .linking import late_link_codegen

#: the widths LLVM accepts for "prefer-vector-width", in bits
WIDTHS = (128, 256, 512)


def vector_width() -> int:
    """The vector width fastbp asks for: ``FASTBP_VECTOR_WIDTH`` if set, else 512.

    Raises
    ------
    ValueError
        If ``FASTBP_VECTOR_WIDTH`` is not one of 128, 256, 512.
    """
    text = os.environ.get("FASTBP_VECTOR_WIDTH", "512").strip()
    if text not in {str(w) for w in WIDTHS}:
        raise ValueError(f"FASTBP_VECTOR_WIDTH={text!r} is not a vector width; set it to one of {WIDTHS} or unset it")
    return int(text)


VECTOR_WIDTH = vector_width()


def vector_registers() -> int:
    """Vector registers of the CPU that Numba compiles for: 32 with AVX-512 (zmm0-31), else 16.

    The features are Numba's: ``NUMBA_CPU_FEATURES`` if set, else the host's. Numba's cache index is
    keyed by the same features, so code built for one count is never loaded on a CPU with the other.
    """
    features = config.CPU_FEATURES
    if features is None:
        try:
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:  # LLVM cannot read this host's features (as Numba, then assume none)
            features = ""
    return 32 if "+avx512f" in features.split(",") else 16


VECTOR_REGISTERS = vector_registers()


def _width_attributes(width: int) -> tuple[str, ...]:
    """LLVM string attributes that set the vector width of one function."""
    return f'"prefer-vector-width"="{width}"', f'"min-legal-vector-width"="{width}"'


@functools.cache
def _wide_context(base: type) -> type:
    """A subclass of Numba's target context `base` that tags every function it lowers with the width, and
    whose code libraries link big callees after optimising (`linking.LateLinkLibrary`)."""

    class WideVectorContext(base):
        def post_lowering(self, mod, library):
            super().post_lowering(mod, library)
            for function in mod.functions:
                if not function.is_declaration:
                    # llvmlite's attribute set accepts only enum attributes by name; LLVM's IR
                    # also takes string attributes in the same place, so they go in as text
                    set.update(function.attributes, _width_attributes(VECTOR_WIDTH))

        def codegen(self):
            # every library made for this compilation, its parallel loops' wrappers included
            return late_link_codegen(super().codegen())

        def get_executable(self, library, fndesc, env):
            if fndesc.qualname.startswith(_PARALLEL_LOOP_BODY):
                # Numba links a parallel loop's body into its kernel and never calls it from Python: an entry
                # point for Python would generate its machine code only for that (0.1-0.15 s per loop, cold)
                return _not_callable(fndesc.qualname)
            return super().get_executable(library, fndesc, env)

    WideVectorContext.__name__ = WideVectorContext.__qualname__ = f"WideVector{base.__name__}"
    return WideVectorContext


#: how Numba names the function of a parallel loop's body (`numba.parfors.parfor_lowering`)
_PARALLEL_LOOP_BODY = "__numba_parfor_gufunc_"


def _not_callable(name: str):
    """What Python gets for a parallel loop's body: a function that says it cannot be called."""
    def body(*args, **kwargs):
        raise RuntimeError(f"{name} is the body of a parallel loop, run by its kernel only")
    body.__name__ = body.__qualname__ = name
    return body


class WideVectorCompiler(Compiler):
    """Numba's compiler, asking LLVM for vectors `VECTOR_WIDTH` bits wide in what it compiles, and linking
    big callees after LLVM's optimisation (`linking`).

    Numba gives each compilation its own copy of the target context (`_make_subtarget`), and the
    bodies of its parallel loops are compiled with a copy of that copy; giving this one the
    subclass of `_wide_context` tags every function of the kernel, parallel loop bodies included.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        context = self.state.targetctx
        if not type(context).__name__.startswith("WideVector"):
            context.__class__ = _wide_context(type(context))
