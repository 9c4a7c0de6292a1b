"""Export a trained `MLP` to ONNX, so that it can be served by ONNX Runtime or any other ONNX backend.

The graph is the forward pass of `MLP.predict_proba`: for l = 1..L, ``z^l = b^l + W^l a^{l-1}`` as a Gemm
node (transB=1, since W^l is stored (n_l, n_{l-1})), then the hidden activation, and the output layer
(Softmax over axis 1, Sigmoid or Identity). Input ``"X"`` (batch, n_0), output ``"probabilities"``
(batch, n_L); the batch dimension is dynamic; the model's dtype (float32 or float64) is kept.
Built with the `onnx` package, an optional dependency: ``pip install fastbp[onnx]``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .model import MLP

#: the ONNX opset of the exported graphs (every node used exists unchanged since opset 13)
OPSET = 18

#: fastbp activation -> ONNX operator (each takes one input and has no attributes); "Gelu" is written as
#: ½ z (1 + erf(z/√2)) from Erf, Add and Mul (`_gelu_nodes`): ONNX's own Gelu needs opset 20
HIDDEN_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "identity": "Identity", "gelu": "Gelu"}
#: fastbp output layer -> (ONNX operator, attributes)
OUTPUT_OPS = {"softmax": ("Softmax", {"axis": 1}), "sigmoid": ("Sigmoid", {}), "identity": ("Identity", {}),
              "poisson": ("Exp", {})}


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("exporting to ONNX needs the onnx package: pip install fastbp[onnx] "
                          "(or pip install onnx)") from exc
    return onnx


def _op(name: str, table: dict, kind: str):
    """The ONNX op of activation/output `name`, or a clear error for one that has none here."""
    if name not in table:
        raise NotImplementedError(f"the {kind} {name!r} has no ONNX operator in fastbp.onnx yet; "
                                  f"exportable {kind}s: {sorted(table)} (add its op to fastbp/onnx.py)")
    return table[name]


def _gelu_nodes(helper, numpy_helper, z: str, a: str, l: int, dtype) -> tuple[list, list]:
    """(nodes, initializers) of a = ½ z (1 + erf(z/√2)), the exact GELU that fastbp computes."""
    consts = {f"gelu{l}_rsqrt2": 1 / np.sqrt(2.0), f"gelu{l}_one": 1.0, f"gelu{l}_half": 0.5}
    inits = [numpy_helper.from_array(np.array(value, dtype), name) for name, value in consts.items()]
    p = f"gelu{l}_"
    nodes = [helper.make_node("Mul", [z, p + "rsqrt2"], [p + "scaled"]),
             helper.make_node("Erf", [p + "scaled"], [p + "erf"]),
             helper.make_node("Add", [p + "erf", p + "one"], [p + "sum"]),
             helper.make_node("Mul", [z, p + "sum"], [p + "product"]),
             helper.make_node("Mul", [p + "product", p + "half"], [a], name=f"activation{l}")]
    return nodes, inits


def to_onnx(model: MLP, path: str | os.PathLike | None = None, opset: int = OPSET):
    """The ONNX graph of `model`'s ``predict_proba``, written to `path` when given.

    Parameters
    ----------
    model : MLP
    path : str or path-like, optional
        File to write (``.onnx``); nothing is written when None.
    opset : int, default 18
        The ONNX opset the model declares (≥ 13).

    Returns
    -------
    onnx.ModelProto
        Checked by ``onnx.checker.check_model``.

    Raises
    ------
    ImportError
        The onnx package is not installed (``pip install fastbp[onnx]``).
    NotImplementedError
        An activation or output layer has no ONNX operator in `HIDDEN_OPS`/`OUTPUT_OPS`.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    if opset < 13:
        raise ValueError(f"opset must be ≥ 13 (Softmax over one axis), got {opset}")
    hidden = [_op(a, HIDDEN_OPS, "activation") for a in model.activations]
    out_op, out_attrs = _op(model.output, OUTPUT_OPS, "output")
    elem = TensorProto.FLOAT if np.dtype(model.dtype) == np.float32 else TensorProto.DOUBLE
    nodes, inits, a = [], [], "X"
    L = len(model.weights)
    for l, (W, b) in enumerate(zip(model.weights, model.biases), start=1):
        inits += [numpy_helper.from_array(np.ascontiguousarray(W), f"W{l}"),
                  numpy_helper.from_array(np.ascontiguousarray(b), f"b{l}")]
        nodes.append(helper.make_node("Gemm", [a, f"W{l}", f"b{l}"], [f"z{l}"], name=f"dense{l}", transB=1))
        if l < L and hidden[l - 1] == "Gelu":
            gelu, constants = _gelu_nodes(helper, numpy_helper, f"z{l}", f"a{l}", l, model.dtype)
            nodes, inits = nodes + gelu, inits + constants
        elif l < L:
            nodes.append(helper.make_node(hidden[l - 1], [f"z{l}"], [f"a{l}"], name=f"activation{l}"))
        a = f"a{l}"
    nodes.append(helper.make_node(out_op, [f"z{L}"], ["probabilities"], name="output", **out_attrs))
    graph = helper.make_graph(
        nodes, "fastbp_mlp",
        [helper.make_tensor_value_info("X", elem, ["batch", model.layer_sizes[0]])],
        [helper.make_tensor_value_info("probabilities", elem, ["batch", model.layer_sizes[-1]])],
        initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fastbp",
                              doc_string=repr(model))
    proto.ir_version = min(proto.ir_version, 9)  # readable by ONNX Runtime releases of the last two years
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto

