"""`import fastbp` is cheap: Numba and the kernels load on first use of a public name (fastbp/__init__.py)."""
import subprocess
import sys

import pytest

import fastbp


def _run(code):
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def test_import_loads_neither_numba_nor_numpy():
    assert _run("import sys, fastbp; print('numba' in sys.modules, 'numpy' in sys.modules, fastbp.__version__)") == [
        "False", "False", fastbp.__version__]


def test_first_use_of_a_name_loads_the_kernels_and_the_threading_layer_choice():
    """fastbp.parallel (which picks the threading layer) loads before any kernel module."""
    out = _run("import sys, fastbp; m = fastbp.MLP([2, 3, 2]); "
               "names = [n for n in sys.modules if n.startswith('fastbp.')]; "
               "print('numba' in sys.modules, names.index('fastbp.parallel') < names.index('fastbp.kernels.dense'))")
    assert out == ["True", "True"]


@pytest.mark.parametrize("name", fastbp.__all__)
def test_every_public_name_resolves_and_is_listed(name):
    assert getattr(fastbp, name) is not None
    assert name in dir(fastbp)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Mlp'"):
        fastbp.Mlp
