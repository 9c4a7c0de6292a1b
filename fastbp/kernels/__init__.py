"""Compiled kernels of fastbp: explicit loop nests in the notation of docs/notation.md.

- `activations`: the registry of activations: f and f' (relu, tanh, sigmoid, identity, GELU), selected by a code
- `checks`: the finiteness check on every input value (NaN, ±inf), before any other kernel runs
- `dense`: the dense layer's forward, backward-δ and weight-gradient kernels, and the SGD step fused into the forward
- `losses`: output layers fused with their losses (softmax/CE, sigmoid/BCE, identity/½SE)
- `optimizers`: SGD (momentum, Nesterov), Adam and AdamW steps, L2 penalty and gradient-norm clipping
- `training`: one step and the loops over an epoch's mini-batches (plain SGD: each step taken by the next forward)
- `reference`: the readable twins of the dense and loss kernels, plain loop nests in the index notation
"""
from .. import parallel  # noqa: F401  first: picks a thread-safe Numba threading layer (fastbp/parallel.py)
from .cache import attach_caches, configure_cache

from .collector import pause_while_compiling

pause_while_compiling()
configure_cache()  # before any kernel module is imported: their dispatchers' caches are attached below

from .activations import (ACTIVATIONS, GELU, IDENTITY, REGISTRY, RELU, SIGMOID, TANH, Activation, activate,
                          derivative, glorot_uniform, he_normal, smooth_flag)
from . import reference  # noqa: F401  the readable twins (compiled on first use)
from .checks import all_finite
from .dense import (PACK_ELEMENTS, backward_packs, bias_gradient, dense_backward, dense_forward, dense_forward_rows,
                    dense_forward_serial, dense_update_forward, dense_weight_gradient)
from .losses import (EXP_POISSON, IDENTITY_SE, OUTPUTS, SIGMOID_BCE, SOFTMAX_CE, count_correct, output_activation,
                     output_activation_serial, output_loss)
from .optimizers import (
    ADAM,
    ADAMW,
    N_HYPER,
    OPTIMIZERS,
    SGD,
    adam_step,
    add_l2_penalty,
    clip_grad_norm,
    hyper_parameters,
    optimizer_step,
    sgd_step,
)
from .training import (
    LINE,
    PREDICT_ROWS,
    TRANSPOSE_MIN_ROWS,
    forward,
    forward_backward,
    forward_with_step,
    loss_and_backward,
    output_and_loss,
    packs_flag,
    batch_rows,
    batch_weights,
    fit_forward_is_compiled,
    param_offsets,
    predict_kernel,
    predict_outputs,
    predict_outputs_by_fit_forward,
    predict_outputs_by_layer,
    predict_outputs_rows,
    predict_rows,
    row_stride,
    train_epoch,
    train_epoch_optimizer,
    transpose_weights,
    transposed_size,
    workspace_offsets,
)

from . import sparse  # noqa: E402,F401  the sparse first layer (fastbp.sparse_input), before its cache is attached

attach_caches()  # after every kernel module: each kernel gets fastbp's checked cache (kernels/cache.py)

__all__ = [
    "ACTIVATIONS", "GELU", "IDENTITY", "REGISTRY", "RELU", "SIGMOID", "TANH", "Activation", "activate", "derivative",
    "glorot_uniform", "he_normal", "smooth_flag", "all_finite",
    "PACK_ELEMENTS", "backward_packs", "bias_gradient", "dense_backward", "dense_forward", "dense_forward_rows",
    "dense_forward_serial", "dense_update_forward", "dense_weight_gradient",
    "EXP_POISSON", "IDENTITY_SE", "OUTPUTS", "SIGMOID_BCE", "SOFTMAX_CE", "count_correct", "output_activation",
    "output_activation_serial", "output_loss",
    "forward", "forward_backward", "forward_with_step", "loss_and_backward", "output_and_loss", "packs_flag", "batch_rows",
    "batch_weights",
    "fit_forward_is_compiled", "param_offsets", "predict_kernel", "predict_outputs", "predict_outputs_by_fit_forward",
    "predict_outputs_by_layer",
    "predict_outputs_rows", "predict_rows", "row_stride",
    "train_epoch", "workspace_offsets", "train_epoch_optimizer", "transpose_weights",
    "transposed_size",
    "LINE", "PREDICT_ROWS", "TRANSPOSE_MIN_ROWS",
    "ADAM", "ADAMW", "N_HYPER", "OPTIMIZERS", "SGD", "adam_step", "add_l2_penalty", "clip_grad_norm",
    "hyper_parameters", "optimizer_step", "sgd_step",
]
