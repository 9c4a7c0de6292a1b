"""fastbp.buffers: arrays whose data starts on a 64-byte cache line."""
import numpy as np
import pytest

from fastbp.buffers import LINE_BYTES, copy_on_a_line, empty_on_a_line, zeros_on_a_line


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("shape", [0, 1, 7, (3, 5), (0, 4), (512, 784)])
def test_arrays_start_on_a_line_with_the_asked_shape_and_dtype(shape, dtype):
    for array in (empty_on_a_line(shape, dtype), zeros_on_a_line(shape, dtype)):
        assert array.size == 0 or array.ctypes.data % LINE_BYTES == 0  # NumPy places empty views anywhere
        assert array.shape == np.empty(shape).shape and array.dtype == dtype
        assert array.flags.c_contiguous and array.flags.writeable
    assert not zeros_on_a_line(shape, dtype).any()


def test_copy_on_a_line_casts_and_does_not_share_memory():
    source = np.arange(24.0).reshape(4, 6)[:, ::2]  # not contiguous
    copy = copy_on_a_line(source, np.float32)
    assert copy.ctypes.data % LINE_BYTES == 0 and copy.dtype == np.float32 and copy.flags.c_contiguous
    np.testing.assert_array_equal(copy, source.astype(np.float32))
    assert not np.shares_memory(copy, source)
    assert copy_on_a_line(source).dtype == np.float64
