"""loss_and_grads against the float64 NumPy matrix form and against central finite differences,
for every activation x output pair, depths 1-3, batch sizes 1-37 and odd widths."""
import itertools

import numpy as np
import pytest

import fastbp
from conftest import ACTIVATIONS, OUTPUTS, make_targets, one_hot_or_matrix
from reference import F, output_and_loss
from reference import loss_and_grads as reference

DEPTH_SIZES = {1: [5, 7, 3], 2: [5, 7, 9, 3], 3: [6, 5, 11, 7, 3]}


def _model(activation, output, depth, dtype=np.float64, seed=0):
    sizes = DEPTH_SIZES[depth]
    if output == "sigmoid":
        sizes = sizes[:-1] + [1 if depth == 2 else 3]  # one binary output and multi-label
    return fastbp.MLP(sizes, activation=activation, output=output, dtype=dtype, seed=seed)


def _data(model, S, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(S, model.layer_sizes[0]))
    return X, make_targets(rng, model.output, S, model.layer_sizes[-1])


@pytest.mark.parametrize("activation,output,depth", list(itertools.product(ACTIVATIONS, OUTPUTS, [1, 2, 3])))
def test_matches_numpy_reference_float64(activation, output, depth):
    model = _model(activation, output, depth)
    for S in range(1, 38):
        X, y = _data(model, S, seed=S)
        loss, dW, db = model.loss_and_grads(X, y)
        T = one_hot_or_matrix(y, output, model.layer_sizes[-1])
        ref_loss, ref_dW, ref_db = reference(model.weights, model.biases, model.activations, output, X, T)
        assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-12)
        for got, want in zip(dW + db, ref_dW + ref_db):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation,output,depth", list(itertools.product(ACTIVATIONS, OUTPUTS, [1, 2, 3])))
@pytest.mark.parametrize("S", [1, 4, 13])
def test_matches_central_differences(activation, output, depth, S):
    model = _model(activation, output, depth, seed=S)
    X, y = _data(model, S, seed=100 + S)
    _, dW, db = model.loss_and_grads(X, y)
    eps = 1e-5
    for param, grad in zip(model.weights + model.biases, dW + db):
        for index in np.ndindex(param.shape):
            saved = param[index]
            param[index] = saved + eps
            up = model.loss_and_grads(X, y)[0]
            param[index] = saved - eps
            down = model.loss_and_grads(X, y)[0]
            param[index] = saved
            assert grad[index] == pytest.approx((up - down) / (2 * eps), abs=1e-9, rel=1e-6), (param.shape, index)


@pytest.mark.parametrize("activation,output", list(itertools.product(ACTIVATIONS, OUTPUTS)))
def test_float32_agrees_with_float64_reference(activation, output):
    model = _model(activation, output, 2, dtype=np.float32)
    for S in (1, 7, 8, 37):
        X, y = _data(model, S, seed=S)
        loss, dW, db = model.loss_and_grads(X, y)
        T = one_hot_or_matrix(y, output, model.layer_sizes[-1])
        ref_loss, ref_dW, ref_db = reference(model.weights, model.biases, model.activations, output, X, T)
        assert loss == pytest.approx(ref_loss, rel=2e-5, abs=1e-6)
        for got, want in zip(dW + db, ref_dW + ref_db):
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5)


def test_loss_and_grads_leaves_model_unchanged():
    model = _model("tanh", "softmax", 2)
    before = [W.copy() for W in model.weights + model.biases]
    X, y = _data(model, 9, seed=0)
    model.loss_and_grads(X, y)
    for W, saved in zip(model.weights + model.biases, before):
        np.testing.assert_array_equal(W, saved)


def test_one_hot_and_label_targets_agree():
    model = _model("relu", "softmax", 1)
    X, y = _data(model, 10, seed=3)
    loss_labels, dW_labels, _ = model.loss_and_grads(X, y)
    loss_onehot, dW_onehot, _ = model.loss_and_grads(X, np.eye(3)[y])
    assert loss_labels == loss_onehot
    np.testing.assert_array_equal(dW_labels[0], dW_onehot[0])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_layers_with_padded_rows_match_the_numpy_reference(activation):
    """Widths that are multiples of 512 have padded rows in the workspace (`kernels.row_stride`): a^0 gathered,
    both hidden layers, and z^l for GELU. float64 against the NumPy matrix form, and a fit's predictions."""
    model = fastbp.MLP([512, 512, 1024, 3], activation=activation, output="softmax", dtype=np.float64, seed=1)
    for S in (1, 6):
        X, y = _data(model, S, seed=S)
        loss, dW, db = model.loss_and_grads(X, y)
        ref_loss, ref_dW, ref_db = reference(model.weights, model.biases, model.activations, "softmax", X, np.eye(3)[y])
        assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-12)
        for got, want in zip(dW + db, ref_dW + ref_db):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    X, y = _data(model, 40, seed=7)
    model.fit(X, y, epochs=2, batch_size=8, shuffle=True, seed=0, verbose=0)  # batches gathered into a^0
    a = X
    for W, b, activation_l in zip(model.weights, model.biases, model.activations + ["identity"]):
        a = F[activation_l][0](a @ W.T + b)
    np.testing.assert_allclose(model.predict_proba(X), output_and_loss(a, np.zeros_like(a), "softmax")[0],
                               rtol=1e-10, atol=1e-12)


def test_a_layer_whose_backward_packs_W_matches_the_reference():
    """Layer 2's W (500 x 600) is past `dense.PACK_MIN_ELEMENTS`: δ^1 (eq. 15) comes from packed blocks of W, in
    the packs at the end of the training workspace (`training.workspace_offsets`)."""
    model = fastbp.MLP([20, 600, 500, 3], activation="tanh", output="softmax", dtype=np.float64, seed=0)
    assert fastbp.kernels.backward_packs(500, 600) > 0 and fastbp.kernels.packs_flag(model.layer_sizes) is True
    X, y = _data(model, 37, seed=1)
    loss, dW, db = model.loss_and_grads(X, y)
    T = one_hot_or_matrix(y, "softmax", 3)
    ref_loss, ref_dW, ref_db = reference(model.weights, model.biases, model.activations, "softmax", X, T)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for got, want in zip(dW + db, ref_dW + ref_db):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
