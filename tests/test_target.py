"""The vector width of fastbp's kernels (fastbp/kernels/target.py): the CPU's whole vector unit.

The kernels are compiled, never run, for named CPUs in subprocesses (Numba's NUMBA_CPU_NAME and
NUMBA_CPU_FEATURES), so an AVX-512 build can be checked on any x86-64 machine.
"""
import os
import platform
import re
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from fastbp import kernels as K

x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 CPU names")

AVX512 = {"NUMBA_CPU_NAME": "skylake-avx512",
          "NUMBA_CPU_FEATURES": "+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx512cd,+avx2,+fma,+avx"}
AVX2 = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}

# compile the backward (row sums in register tiles, a parallel loop) for float32 and print its assembly
COMPILE = textwrap.dedent("""
    from numba import types as T
    from fastbp import kernels as K
    A2 = T.Array(T.float32, 2, "C")
    K.dense_backward.compile((A2, A2, A2, T.int64, A2, A2))  # with the training workspace's packs
    print("\\n".join(K.dense_backward.inspect_asm().values()))
""")


def _assembly(tmp_path, cpu: dict, width: int) -> str:
    """The backward's instructions compiled for `cpu` at FASTBP_VECTOR_WIDTH=`width`, in a fresh process
    and cache; addresses and the names of compiled functions, which differ from run to run, are blanked."""
    env = {**os.environ, **cpu, "FASTBP_VECTOR_WIDTH": str(width),
           "NUMBA_CACHE_DIR": str(tmp_path / f"{cpu['NUMBA_CPU_NAME']}-{width}")}
    run = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("\t") and not line.startswith("\t.")]
    text = re.sub(r"_ZN\w+", "_ZN", re.sub(r"0x[0-9a-f]+", "0x", "\n".join(lines)))
    return re.sub(r"kernel\.\d+", "kernel.", text)  # a parallel loop's body, kernel.<id>___gufunc


def test_fastbp_functions_carry_the_width_and_other_numba_code_does_not():
    A = np.ones((8, 64), np.float32)
    W, b, out = np.ones((16, 64), np.float32), np.zeros(16, np.float32), np.empty((8, 16), np.float32)
    K.dense_forward_serial(A, W, b, K.RELU, out)
    np.testing.assert_array_equal(out, 64)

    @numba.njit
    def plain(x):  # someone else's function in the same process
        return x.sum()

    plain(A)
    assert "prefer-vector-width" not in "".join(plain.inspect_llvm().values())
    tagged = numba.njit(K.dense_forward_serial.py_func, pipeline_class=K.common.WideVectorCompiler)  # uncached
    tagged(A, W, b, K.RELU, out)
    assert f'"prefer-vector-width"="{K.target.VECTOR_WIDTH}"' in "".join(tagged.inspect_llvm().values())


@x86
@pytest.mark.slow
def test_avx512_cpus_get_512_bit_vectors(tmp_path):
    wide, narrow = _assembly(tmp_path, AVX512, 512), _assembly(tmp_path, AVX512, 256)
    zmm, ymm = wide.count("%zmm"), wide.count("%ymm")
    assert zmm > 2 * ymm, f"at width 512: {zmm} zmm against {ymm} ymm mentions"
    assert narrow.count("%zmm") < narrow.count("%ymm") / 4, "FASTBP_VECTOR_WIDTH=256 still fills zmm registers"


@x86
@pytest.mark.slow
def test_avx2_cpus_compile_the_same_code_at_every_width(tmp_path):
    """Asking for 512 bits where the CPU has 256 changes no instruction: AVX2 machines cannot regress."""
    wide, narrow = _assembly(tmp_path, AVX2, 512), _assembly(tmp_path, AVX2, 256)
    assert wide.count("%ymm") > 50 and "%zmm" not in wide
    assert wide == narrow


@x86
@pytest.mark.parametrize("cpu,samples", [(AVX512, 4), (AVX2, 3)], ids=["avx512", "avx2"])
def test_the_forward_tile_fits_the_vector_registers(cpu, samples):
    """4 x 4 dot products (16 vector sums) where there are 32 registers, 3 x 4 (12) where there are 16."""
    env = {**os.environ, **cpu}
    run = subprocess.run([sys.executable, "-c", "from fastbp.kernels import dense; print(dense.SAMPLE_TILE)"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.split() == [str(samples)], run.stderr


def test_a_bad_width_is_refused_when_the_kernels_load():
    env = {**os.environ, "FASTBP_VECTOR_WIDTH": "300"}
    run = subprocess.run([sys.executable, "-c", "import fastbp; fastbp.MLP"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "FASTBP_VECTOR_WIDTH='300'" in run.stderr and "(128, 256, 512)" in run.stderr


def test_the_width_and_the_register_tiles_are_part_of_the_cache_key(monkeypatch):
    digest = K.cache.kernels_digest()
    monkeypatch.setattr(K.cache, "VECTOR_WIDTH", 256 if K.target.VECTOR_WIDTH != 256 else 512)
    assert K.cache.kernels_digest() != digest
    monkeypatch.undo()
    # the register count sizes dense.SAMPLE_TILE and CHUNK, which the compiled kernels hold as constants
    monkeypatch.setattr(K.cache, "VECTOR_REGISTERS", 48 - K.target.VECTOR_REGISTERS)
    assert K.cache.kernels_digest() != digest


# compile the row sums' panel (dense._rows_panel) for float32, uncached, never run, and print its assembly
PANEL = textwrap.dedent("""
    import numba
    from numba import types as T
    from fastbp.kernels import common, dense
    panel = numba.njit(dense._rows_panel.py_func, fastmath=common.FASTMATH, pipeline_class=common.NoAliasCompiler)
    F, A2, A1 = T.Array(T.float32, 2, "A"), T.Array(T.float32, 2, "C"), T.Array(T.float32, 1, "C")
    panel.compile((F, A2, A1, A1, A1, A1, T.int64, T.int64))
    print("\\n".join(panel.inspect_asm().values()))
""")


@x86
@pytest.mark.parametrize("cpu,register", [(AVX512, "zmm"), (AVX2, "ymm")], ids=["avx512", "avx2"])
def test_the_row_sums_panel_keeps_its_sums_in_registers(cpu, register):
    """`dense._rows_panel`'s loop over the terms: 8 vector FMAs into registers and no store (docs/derivation.md
    eq. 15, 16). Its 4 output rows are separate noalias arguments so that LLVM may keep them in registers."""
    run = subprocess.run([sys.executable, "-c", PANEL], env={**os.environ, **cpu}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    # the innermost loops: from a label to the jump back to it, with no label between
    loops = [body for _, body in re.findall(r"(?=^(\.LBB\w+):\n(.*?)^\tj\w+\t\1$)", run.stdout, re.M | re.S)
             if ".LBB" not in body and len(re.findall(rf"^\tvfmadd\w+\s.*%{register}\d+$", body, re.M)) >= 8]
    assert loops, f"no loop of 8 {register} FMAs"
    for block in loops:
        stores = re.findall(r"\tvmov\w+\s+%[xyz]mm\d+, \S*\(", block)
        assert not stores, f"the panel's loop stores {stores}"
