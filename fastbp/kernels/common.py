"""What every kernel module shares: the fast-math flags and a dtype cast."""
from numba.extending import overload

# reassoc lets LLVM vectorise each dot product (the order is fixed at compile time, per shape);
# contract allows fused multiply-add. No nnan/ninf: NaN checks elsewhere must keep working.
FASTMATH = {"reassoc", "contract"}


def cast_like(x, value):
    """`value` converted to the element type of array `x` (compiled code only)."""
    raise NotImplementedError("cast_like is for compiled code")


@overload(cast_like, inline="always")
def _cast_like(x, value):
    dtype = x.dtype
    return lambda x, value: dtype(value)
