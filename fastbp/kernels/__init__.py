"""Compiled kernels of fastbp: explicit loop nests in the notation of NOTATION.md.

- `activations`: f and f' (relu, tanh, sigmoid, identity), one table selected by a code
- `dense`: the dense layer's forward, backward-δ and weight-gradient kernels
- `losses`: output layers fused with their losses (softmax/CE, sigmoid/BCE, identity/½SE)
- `training`: one step and the loop over an epoch's mini-batches
"""
from .activations import ACTIVATIONS, IDENTITY, RELU, SIGMOID, TANH, activate, derivative
from .dense import (
    bias_gradient,
    bias_gradient_rows,
    dense_backward,
    dense_backward_rows,
    dense_forward,
    dense_weight_gradient,
    dense_weight_gradient_rows,
    transpose,
)
from .losses import IDENTITY_SE, OUTPUTS, SIGMOID_BCE, SOFTMAX_CE, count_correct, output_activation, output_loss
from .training import (
    forward,
    forward_backward,
    gather_batch,
    param_offsets,
    predict_outputs,
    train_epoch,
    workspace_offsets,
)

__all__ = [
    "ACTIVATIONS", "IDENTITY", "RELU", "SIGMOID", "TANH", "activate", "derivative",
    "bias_gradient", "bias_gradient_rows", "dense_backward", "dense_backward_rows", "dense_forward",
    "dense_weight_gradient", "dense_weight_gradient_rows", "transpose",
    "IDENTITY_SE", "OUTPUTS", "SIGMOID_BCE", "SOFTMAX_CE", "count_correct", "output_activation", "output_loss",
    "forward", "forward_backward", "gather_batch", "param_offsets", "predict_outputs", "train_epoch",
    "workspace_offsets",
]
