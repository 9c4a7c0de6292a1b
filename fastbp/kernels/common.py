"""What every kernel module shares: `njit` with fastbp's compiler, the fast-math flags, a dtype cast
and an unsigned range."""
import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from .target import WideVectorCompiler


def njit(*args, **options):
    """`numba.njit`, compiling with `WideVectorCompiler` (the CPU's whole vector width) unless
    `pipeline_class` names another compiler. Every kernel module decorates with this one."""
    options.setdefault("pipeline_class", WideVectorCompiler)
    return numba.njit(*args, **options)


# reassoc lets LLVM vectorise each dot product (the order is fixed at compile time, per shape);
# contract allows fused multiply-add. No nnan/ninf: NaN checks elsewhere must keep working.
FASTMATH = {"reassoc", "contract"}

# Below this much work (multiply-adds, or elements for the losses) a kernel runs its tiles on the
# calling thread: starting a parallel region costs a few µs, more than splitting such work saves.
# The choice depends on shapes only, so results stay bit-identical for any number of threads.
PARALLEL_WORK = 1 << 16
# The same for the output layers, counted in elements: each costs an exp, some 30 multiply-adds.
PARALLEL_ELEMENTS = 1 << 11


def cast_like(x, value):
    """`value` converted to the element type of array or scalar `x` (compiled code only).

    `cast_like(X, 0)` is a compile-time zero of X's dtype: LLVM vectorises a sum that starts
    from it, but not one that starts from a loaded value such as `X[m, 0] * 0`.
    """
    raise NotImplementedError("cast_like is for compiled code")


@overload(cast_like, inline="always")
def _cast_like(x, value):
    dtype = x.dtype if isinstance(x, types.Array) else x
    return lambda x, value: dtype(value)


#: a parallel loop is cut into about this many tasks: enough that each thread's share varies little
#: with where prange cuts the run of tasks, few enough that a task's call costs nothing
TASKS = 32


@njit(inline="always", cache=True)
def task_range(t, n_tasks, n):
    """Items [i0, i1) of task t when n items are cut into n_tasks runs that differ by at most one."""
    return t * n // n_tasks, (t + 1) * n // n_tasks


@njit(inline="always", cache=True)
def unsigned_range(start, stop):
    """range(start, stop) with an unsigned index. Numba wraps negative indices around, and that
    check keeps LLVM from vectorising a loop that does not start at 0; unsigned indices skip it."""
    return range(np.uint64(start), np.uint64(stop))


class NoAliasCompiler(WideVectorCompiler):
    """Numba's compiler, telling LLVM that no two array arguments overlap where one is written.

    Numba compiles the body of every parallel loop so (when it sees no aliases), and LLVM needs it to
    vectorise a row sum: without it, the 4 output rows and 8 input rows of `_rows_chunk` would need
    38 run-time overlap checks, more than LLVM's limit of 8, and the loop would stay scalar.
    For the task functions that the kernels' loops call: `@njit(pipeline_class=NoAliasCompiler)`.
    """

    def define_pipelines(self):  # Numba's documented hook for a custom compiler
        self.state.flags.noalias = True  # this compilation's own flags
        return super().define_pipelines()
