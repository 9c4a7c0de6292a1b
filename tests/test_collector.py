"""The garbage collector waits while a fastbp kernel compiles (`fastbp.kernels.collector`), and only then."""
import gc

import numba
import pytest
from numba.core import event

import fastbp.kernels  # noqa: F401  registers the listener


def _kernel(module: str, body):
    """A fresh dispatcher of `body`, as if defined in `module` (compiled at its first call, never cached)."""
    body.__module__ = module
    return numba.njit(body)


def _collector_during_compile(kernel, *args) -> list[bool]:
    """gc.isenabled() at each of Numba's compiler passes while kernel(*args) compiles."""
    seen = []

    class Passes(event.Listener):
        def on_start(self, ev):
            seen.append(gc.isenabled())

        def on_end(self, ev):
            pass

    with event.install_listener("numba:run_pass", Passes()):
        kernel(*args)
    return seen


def test_the_collector_is_off_while_a_fastbp_kernel_compiles_and_on_after():
    def add_one(x):
        return x + 1

    assert gc.isenabled()
    seen = _collector_during_compile(_kernel("fastbp.kernels.probe", add_one), 1)
    assert seen and not any(seen)
    assert gc.isenabled()


def test_other_code_compiles_with_the_collector_as_it_was():
    def add_two(x):
        return x + 2

    seen = _collector_during_compile(_kernel("users_module", add_two), 1)
    assert seen and all(seen)


def test_a_compilation_that_raises_turns_the_collector_back_on():
    def untypable(x):
        return x.no_such_attribute

    with pytest.raises(numba.core.errors.TypingError):
        _kernel("fastbp.kernels.probe", untypable)(1)
    assert gc.isenabled()


def test_a_collector_the_user_turned_off_stays_off():
    def add_three(x):
        return x + 3

    gc.disable()
    try:
        _kernel("fastbp.kernels.probe", add_three)(1)
        assert not gc.isenabled()
    finally:
        gc.enable()
