"""Late linking (fastbp/kernels/linking.py): a big callee joins its caller's LLVM module after the caller is
optimised, a small one before, so that it is still inlined; the caller's module keeps every callee's code."""
import numba
import numpy as np
import pytest

from fastbp.kernels import linking, target
from fastbp.kernels.common import njit

pytestmark = pytest.mark.skipif(not linking.SUPPORTED, reason="this Numba links as it always did")


def _functions():
    """A caller of a big callee (a loop LLVM vectorises and unrolls) and of a small one, new for each test so
    that each compiles under the test's threshold."""
    @njit
    def big(x):
        total = 0.0
        for i in range(x.shape[0]):
            total += np.sqrt(abs(x[i])) * x[i]
        return total

    @njit
    def small(v):
        return 2.0 * v + 1.0

    @njit
    def caller(x):
        return small(big(x)) + small(x[0])

    return big, small, caller


def _library(dispatcher):
    return dispatcher.overloads[dispatcher.signatures[0]].library


def _name(dispatcher) -> str:
    return dispatcher.overloads[dispatcher.signatures[0]].fndesc.llvm_func_name


def _defined(library) -> set[str]:
    return {fn.name for fn in library._final_module.functions if not fn.is_declaration}


def test_a_big_callee_is_linked_after_the_optimisation_and_a_small_one_is_still_inlined(monkeypatch):
    big, small, caller = _functions()
    x = np.linspace(-3.0, 3.0, 101)
    big(x), small(1.0)
    threshold = linking.instructions(_library(small))
    assert linking.instructions(_library(big)) > threshold  # the test's premise: one big, one small callee
    monkeypatch.setattr(linking, "LATE_LINK_INSTRUCTIONS", threshold)

    expected = 2.0 * big.py_func(x) + 1.0 + 2.0 * x[0] + 1.0
    assert caller(x) == pytest.approx(expected, rel=1e-12)
    library = _library(caller)
    assert type(library) is linking.LateLinkLibrary
    assert library._late == [_library(big)]
    defined = _defined(library)
    assert _name(big) in defined  # self-contained, as a cached caller must be
    assert _name(small) not in defined  # inlined, then dropped as O3 drops it
    assert not any(name.startswith(("cpython.", "cfunc.")) and _name(big) in name for name in defined)


def test_with_no_big_callee_every_callee_is_optimised_with_the_caller(monkeypatch):
    big, small, caller = _functions()
    monkeypatch.setattr(linking, "LATE_LINK_INSTRUCTIONS", 10 ** 9)
    x = np.arange(5.0)
    assert caller(x) == pytest.approx(2.0 * big.py_func(x) + 1.0 + 1.0, rel=1e-12)
    assert _library(caller)._late == []


def test_other_numba_code_links_as_numba_does():
    @numba.njit
    def plain(x):
        return x.sum()

    assert plain(np.ones(3)) == 3.0
    assert type(_library(plain)) is not linking.LateLinkLibrary


def test_numbas_runtime_links_as_it_always_did(monkeypatch):
    """NRT's reference counting must be inlined for Numba to prune it: a caller that allocates keeps it
    out of the late links, however low the threshold."""
    monkeypatch.setattr(linking, "LATE_LINK_INSTRUCTIONS", 0)

    @njit
    def allocates(n):
        return np.ones(n).sum()

    assert allocates(4) == 4.0
    library = _library(allocates)
    runtime = [lib for lib in library._linking_libraries if lib.name == "nrt"]
    assert runtime and not linking.is_fastbps(runtime[0])
    assert not set(runtime) & set(library._late)


def test_a_parallel_loops_wrappers_get_no_machine_code_of_their_own():
    """Numba links the wrappers of a parallel loop and its body into the kernel and never runs their own copies:
    their machine code waits for a need that never comes, while the kernel's is made for its first call. The body
    gets no Python entry point, which would need its machine code (`target.WideVectorCompiler`)."""
    @njit(parallel=True)
    def total(x):
        s = 0.0
        for i in numba.prange(x.shape[0]):
            s += x[i]
        return s

    x = np.arange(1000.0)
    assert total(x) == x.sum()
    library = _library(total)
    outer = [lib for lib in library._linking_libraries if lib.name.startswith("parallelgufuncwrapper")]
    inner = [lib for wrapper in outer for lib in wrapper._linking_libraries if "GufuncWrapper" in lib.name]
    body = [lib for lib in library._linking_libraries if lib.name.startswith(target._PARALLEL_LOOP_BODY)]
    assert outer and inner and body
    assert all(lib._machine_code_pending for lib in outer + inner + body)
    assert not library._machine_code_pending
    with pytest.raises(RuntimeError, match="body of a parallel loop"):
        target._not_callable(body[0].name)()
