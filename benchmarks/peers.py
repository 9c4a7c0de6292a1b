"""fastbp against PyTorch, JAX, scikit-learn and (in inference) ONNX Runtime, side by side in one process.

The job (`reference_job.py`): MLP 784-256-128-10, relu, softmax cross-entropy, plain SGD lr 0.01,
float32, random samples, one epoch without shuffling. `--sizes 784 1024 1024 10` runs the same job
on other layer sizes (the wide networks 784-1024-1024-10 and 784-2048-2048-10, with fewer
`--samples`). `--optimizer adam` runs the same job with Adam
(lr 1e-3, betas (0.9, 0.999), eps 1e-8: PyTorch's defaults) in every library, `--activation tanh` (or
sigmoid) with that activation in the hidden layers. Every library starts
from the same initial weights and sees the same batches in the same order, so after the epoch all of
them should reach the same loss; the table shows it as a check that they did the same work.

    python benchmarks/peers.py --batches 1 16 64 128 512 --samples 60000 --samples-small-batch 5000 \\
        --rounds 7 --plot benchmarks/peers.png --json peers.json
    python benchmarks/peers.py --quick          # a smoke check: 4,096 samples, a minute or two
    python benchmarks/peers.py --optimizer adam --batches 16 64 128 512 --rounds 5
    python benchmarks/peers.py --activation tanh --batches 16 128 512 --rounds 5
    python benchmarks/peers.py --sizes 784 1024 1024 10 --batches 64 128 512 --samples 6000 --rounds 3

Peers that are not installed are skipped; none of them is a dependency of fastbp.
How each library is run:
- fastbp: `MLP.fit(X, y, epochs=1, batch_size=B, optimizer=SGD(lr=0.01), shuffle=False, verbose=0)` (or Adam),
  after a warm-up fit on a few samples (compilation, or loading the on-disk cache, is not timed).
- PyTorch: eager, `torch.set_num_threads(--threads)`, nn.Sequential of Linear/ReLU (or Tanh, Sigmoid),
  CrossEntropyLoss, torch.optim.SGD (or Adam), a Python loop over batches of tensors made before timing.
- JAX: one jitted SGD step scanned over the epoch with `jax.lax.scan` (batches reshaped to
  (n_batches, B, 784); a last partial batch takes one more jitted step), compiled ahead of time.
  Adam is optax.adam (JAX is skipped for Adam when optax is not installed). JAX runs in both weight
  layouts, W stored (n_out, n_in) with `x @ W.T` and W stored (n_in, n_out) with `x @ W`, taking turns;
  the faster one counts and the table names it ("JAX form").
- scikit-learn: MLPClassifier(solver="sgd", momentum=0, alpha=0, max_iter=1, shuffle=False), its weights
  set to the common initial ones through warm_start; not run at batch 1 (hours per epoch). Its Adam
  (solver="adam") adds eps to √v before the bias correction, where PyTorch adds it after.
- Inference: `predict_proba` of each library (PyTorch under `torch.no_grad` and `torch.inference_mode`,
  the faster counts; JAX jitted, both layouts; ONNX Runtime on a Gemm(transB=1)/activation/Softmax graph
  of the same weights built with `onnx.helper`, `--threads` intra-op threads, sequential execution,
  all graph optimizations), on --inference-samples rows, and on one row (hot latency: the best of
  --latency-calls calls, after warm-up, the libraries taking turns in blocks).
Times are wall-clock seconds of one epoch, including each library's own input checks; each run starts
after PAUSE_SECONDS of idle time, so that the previous library's worker threads have gone to sleep.
The report ends the training table with the machine's float32 FMA peak (`fma_peak_gflops`, compiled
by fastbp's compiler at the CPU's whole vector width), the ceiling that no step can reach, and the share
of it that fastbp's step ran at; a library or NumPy matmul above it prints "peak is wrong".
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import math
import os
import platform
import sys
import time
import timeit
import warnings
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_job import (DTYPE, LAYER_SIZES, LEARNING_RATE, cross_entropy, forward_flops_per_sample,  # noqa: E402
                           initial_parameters, reference_data, training_contractions, training_flops_per_sample)

from fastbp.kernels.common import njit  # noqa: E402  (fastbp's compiler: the CPU's whole vector width)

LIBRARIES = ("fastbp", "torch", "jax", "sklearn", "onnxruntime")
DISPLAY = {"fastbp": "fastbp", "torch": "PyTorch", "jax": "JAX", "sklearn": "scikit-learn",
           "onnxruntime": "ONNX Runtime"}
#: the modules each library needs
MODULES = {"fastbp": ("fastbp",), "torch": ("torch",), "jax": ("jax",), "sklearn": ("sklearn",),
           "onnxruntime": ("onnxruntime", "onnx")}
#: rows of the data on which every library's loss after the epoch is evaluated
EVAL_SAMPLES = 10_000
#: Adam's settings for --optimizer adam: PyTorch's defaults, which fastbp.Adam shares
ADAM_LR, ADAM_BETAS, ADAM_EPS = 1e-3, (0.9, 0.999), 1e-8
#: --activation: the hidden layers' activation, by its fastbp name
HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid")
#: idle time before each timed run: the worker threads of the library (or BLAS) that ran before go
#: to sleep, instead of spinning on the two cores while the next library is timed
PAUSE_SECONDS = 0.5


# ============================================================================ the libraries
# Each `train_<library>(X, y, batch, params, optimizer, activation)` trains one epoch from the initial
# `params` and returns (seconds, params after the epoch); each `predictor_<library>(params, activation,
# threads)` returns a function X -> class probabilities. params: list of (W (n_out, n_in), b (n_out,))
# float32, whose shapes give the layer sizes; activation: the hidden layers' (`HIDDEN_ACTIVATIONS`).
# A library may come in several forms (JAX's two weight layouts, PyTorch's two no-autograd modes):
# each form is timed, the forms taking turns like the libraries, and the library's fastest form counts.

def layer_sizes_of(params) -> tuple[int, ...]:
    """(n_0, n_1, ..., n_L) of the network `params`."""
    return (params[0][0].shape[1],) + tuple(W.shape[0] for W, _ in params)


def _fastbp_model(params, activation):
    import fastbp

    model = fastbp.MLP(list(layer_sizes_of(params)), activation=activation, output="softmax", dtype=DTYPE, seed=0)
    for (W, b), W_model, b_model in zip(params, model.weights, model.biases):
        W_model[...], b_model[...] = W, b
    return model


def train_fastbp(X, y, batch, params, optimizer, activation):
    import fastbp

    def fit(model, X, y):
        step = (fastbp.SGD(lr=LEARNING_RATE) if optimizer == "sgd"
                else fastbp.Adam(lr=ADAM_LR, betas=ADAM_BETAS, eps=ADAM_EPS))
        model.fit(X, y, epochs=1, batch_size=batch, optimizer=step, shuffle=False, verbose=0)

    warm_up = min(len(X), max(2 * batch, 64))
    fit(_fastbp_model(params, activation), X[:warm_up], y[:warm_up])
    model = _fastbp_model(params, activation)
    start = time.perf_counter()
    fit(model, X, y)
    seconds = time.perf_counter() - start
    return seconds, [(W.copy(), b.copy()) for W, b in zip(model.weights, model.biases)]


def predictor_fastbp(params, activation, threads=None):
    return _fastbp_model(params, activation).predict_proba


def _torch_model(params, activation):
    import torch

    hidden = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}[activation]
    layers = []
    for l, (W, b) in enumerate(params, start=1):
        linear = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if l < len(params):
            layers.append(hidden())
    return torch.nn.Sequential(*layers)


def _torch_epoch(model, batches, optimizer_name):
    import torch

    optimizer = (torch.optim.SGD(model.parameters(), lr=LEARNING_RATE) if optimizer_name == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=ADAM_LR, betas=ADAM_BETAS, eps=ADAM_EPS))
    loss_function = torch.nn.CrossEntropyLoss()
    for x, labels in batches:
        optimizer.zero_grad(set_to_none=True)
        loss_function(model(x), labels).backward()
        optimizer.step()


def train_torch(X, y, batch, params, optimizer, activation):
    import torch

    batches = list(zip(torch.from_numpy(X).split(batch), torch.from_numpy(y).split(batch)))
    _torch_epoch(_torch_model(params, activation), batches[:3], optimizer)  # warm-up: allocator, kernels' first use
    model = _torch_model(params, activation)
    start = time.perf_counter()
    _torch_epoch(model, batches, optimizer)
    seconds = time.perf_counter() - start
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    return seconds, [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in linears]


def predictor_torch(params, activation, threads=None, mode="no_grad"):
    """PyTorch's forward + softmax under `torch.no_grad()` or `torch.inference_mode()` (`mode`)."""
    import torch

    model = _torch_model(params, activation)
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}[mode]

    def predict_proba(X):
        with context():
            return torch.softmax(model(torch.from_numpy(X)), dim=1).numpy()

    return predict_proba


#: JAX's weight layouts by the product they compute: W stored (n_out, n_in) as in fastbp and PyTorch,
#: or (n_in, n_out), XLA's natural layout for `x @ W` (3.4x faster at batch 1 on an AVX-512 Xeon)
JAX_LAYOUTS = {"x @ W.T": "(n_out, n_in)", "x @ W": "(n_in, n_out)"}


def _jax_weights(params, layout):
    """params in JAX's `layout` (`JAX_LAYOUTS`), as JAX arrays."""
    import jax.numpy as jnp

    return [(jnp.asarray(W if layout == "x @ W.T" else np.ascontiguousarray(W.T)), jnp.asarray(b)) for W, b in params]


def _jax_functions(activation, layout="x @ W.T"):
    """(logits(params, x), loss(params, x, labels)) in JAX, with W stored as `layout` says."""
    import jax
    import jax.numpy as jnp

    hidden = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[activation]

    def dense(a, W, b):
        return (a @ W.T if layout == "x @ W.T" else a @ W) + b

    def logits(params, x):
        a = x
        for W, b in params[:-1]:
            a = hidden(dense(a, W, b))
        return dense(a, *params[-1])

    def loss(params, x, labels):
        log_probs = jax.nn.log_softmax(logits(params, x))
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

    return logits, loss


def _jax_step(optimizer, activation, layout):
    """(init(params) -> carry, step(carry, (x, labels)) -> (carry, None), params_of(carry)): a training step
    for `jax.lax.scan`. SGD carries the parameters; Adam (optax's) carries them with its state."""
    import jax

    _, loss = _jax_functions(activation, layout)
    if optimizer == "sgd":
        def sgd_step(params, batch):
            grads = jax.grad(loss)(params, *batch)
            return jax.tree_util.tree_map(lambda p, g: p - LEARNING_RATE * g, params, grads), None

        return (lambda params: params), sgd_step, (lambda carry: carry)
    import optax

    adam = optax.adam(ADAM_LR, b1=ADAM_BETAS[0], b2=ADAM_BETAS[1], eps=ADAM_EPS)

    def adam_step(carry, batch):
        params, state = carry
        updates, state = adam.update(jax.grad(loss)(params, *batch), state, params)
        return (optax.apply_updates(params, updates), state), None

    return (lambda params: (params, adam.init(params))), adam_step, (lambda carry: carry[0])


def train_jax(X, y, batch, params, optimizer, activation, layout="x @ W.T"):
    import jax
    import jax.numpy as jnp

    init, step, params_of = _jax_step(optimizer, activation, layout)
    n_batches, rest = divmod(len(X), batch)
    full = n_batches * batch
    Xb = jnp.asarray(X[:full].reshape(n_batches, batch, X.shape[1]))
    Yb = jnp.asarray(y[:full].reshape(n_batches, batch).astype(np.int32))
    X_rest, y_rest = jnp.asarray(X[full:]), jnp.asarray(y[full:].astype(np.int32))
    carry = init(_jax_weights(params, layout))
    # compiled ahead of time: compilation is not timed
    epoch = jax.jit(lambda c, Xb, Yb: jax.lax.scan(step, c, (Xb, Yb))[0]).lower(carry, Xb, Yb).compile()
    last = jax.jit(lambda c, x, labels: step(c, (x, labels))[0])
    last = last.lower(carry, X_rest, y_rest).compile() if rest else None
    start = time.perf_counter()
    carry = epoch(carry, Xb, Yb)
    if last is not None:
        carry = last(carry, X_rest, y_rest)
    jax.block_until_ready(carry)
    seconds = time.perf_counter() - start
    # back to (n_out, n_in) for the loss check, after the timing
    return seconds, [(np.asarray(W) if layout == "x @ W.T" else np.asarray(W).T.copy(), np.asarray(b))
                     for W, b in params_of(carry)]


def predictor_jax(params, activation, threads=None, layout="x @ W.T"):
    import jax

    logits, _ = _jax_functions(activation, layout)
    weights = _jax_weights(params, layout)
    predict = jax.jit(lambda p, x: jax.nn.softmax(logits(p, x)))

    def predict_proba(X):
        return np.asarray(predict(weights, X).block_until_ready())

    return predict_proba


def _sklearn_model(params, batch, X, optimizer="sgd", activation="relu"):
    """An MLPClassifier fitted once on a few samples (so that it knows the classes), then given `params`.
    Each later `fit` (warm_start) starts a new optimizer: Adam's moments from zero."""
    from sklearn.neural_network import MLPClassifier

    solver = (dict(solver="sgd", learning_rate_init=LEARNING_RATE, momentum=0.0, nesterovs_momentum=False)
              if optimizer == "sgd" else
              dict(solver="adam", learning_rate_init=ADAM_LR, beta_1=ADAM_BETAS[0], beta_2=ADAM_BETAS[1],
                   epsilon=ADAM_EPS))
    hidden = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic"}[activation]
    sizes = layer_sizes_of(params)
    model = MLPClassifier(hidden_layer_sizes=sizes[1:-1], activation=hidden, learning_rate="constant",
                          alpha=0.0, batch_size=batch, max_iter=1, shuffle=False, early_stopping=False, tol=0.0,
                          n_iter_no_change=10**9, random_state=0, warm_start=True, **solver)
    n_classes = sizes[-1]
    few = max(batch, 2 * n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[:few], np.arange(few) % n_classes)  # every class present
    model.coefs_ = [W.T.copy() for W, _ in params]  # scikit-learn stores W^T: (n_in, n_out)
    model.intercepts_ = [b.copy() for _, b in params]
    return model


def train_sklearn(X, y, batch, params, optimizer, activation):
    model = _sklearn_model(params, batch, X, optimizer, activation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning after max_iter=1
        start = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - start
    return seconds, [(W.T.copy(), b.copy()) for W, b in zip(model.coefs_, model.intercepts_)]


def predictor_sklearn(params, activation, threads=None):
    sizes = layer_sizes_of(params)
    X, _ = reference_data(2 * sizes[-1], seed=2, layer_sizes=sizes)
    return _sklearn_model(params, 1, X, activation=activation).predict_proba


#: ONNX operators of the hidden activations
ONNX_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
#: the ONNX opset and IR version of the graph: old enough for every recent ONNX Runtime
ONNX_OPSET, ONNX_IR_VERSION = 17, 8


def onnx_graph(params, activation):
    """An ONNX model of the network: per layer Gemm(a, W, b, transB=1) (W stored (n_out, n_in) as here),
    the hidden activation, and Softmax(axis=1) at the end; input "X" (N, n_0), output "P" (N, n_L)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sizes = layer_sizes_of(params)
    nodes, initializers, a = [], [], "X"
    for l, (W, b) in enumerate(params, start=1):
        initializers += [numpy_helper.from_array(W, f"W{l}"), numpy_helper.from_array(b, f"b{l}")]
        nodes.append(helper.make_node("Gemm", [a, f"W{l}", f"b{l}"], [f"z{l}"], transB=1))
        a = f"z{l}"
        if l < len(params):
            nodes.append(helper.make_node(ONNX_ACTIVATIONS[activation], [a], [f"a{l}"]))
            a = f"a{l}"
    nodes.append(helper.make_node("Softmax", [a], ["P"], axis=1))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, sizes[0]])],
                              [helper.make_tensor_value_info("P", TensorProto.FLOAT, [None, sizes[-1]])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


def predictor_onnxruntime(params, activation, threads=2):
    """ONNX Runtime's CPU session on `onnx_graph`: `threads` intra-op threads, sequential execution,
    every graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_graph(params, activation).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])

    def predict_proba(X):
        return session.run(None, {"X": X})[0]

    return predict_proba


#: library -> {form: train function}; a form "" is the library's only one
TRAIN = {"fastbp": {"": train_fastbp}, "torch": {"": train_torch},
         "jax": {layout: functools.partial(train_jax, layout=layout) for layout in JAX_LAYOUTS},
         "sklearn": {"": train_sklearn}}
#: library -> {form: predictor}
PREDICTOR = {"fastbp": {"": predictor_fastbp},
             "torch": {mode: functools.partial(predictor_torch, mode=mode) for mode in ("no_grad", "inference_mode")},
             "jax": {layout: functools.partial(predictor_jax, layout=layout) for layout in JAX_LAYOUTS},
             "sklearn": {"": predictor_sklearn}, "onnxruntime": {"": predictor_onnxruntime}}


# ============================================================================ measurements
def best_time(function, min_seconds: float = 0.05, repeats: int = 5) -> float:
    """Seconds per call of `function()`: the best of `repeats` timings of loops lasting ≥ min_seconds."""
    timer = timeit.Timer(function)
    number, elapsed = timer.autorange()
    number = max(1, int(number * min_seconds / max(elapsed, 1e-9)))
    return min(timer.repeat(repeat=repeats, number=number)) / number


def numpy_matmul_gflops(batch: int, sizes=LAYER_SIZES) -> float:
    """GFLOP/s of NumPy's matmul over the contractions of one training step at `batch` (same layouts)."""
    rng = np.random.default_rng(0)
    total_seconds, total_flops = 0.0, 0
    for name, M, N, P in training_contractions(batch, sizes):
        if name.startswith("forward"):  # a (S, n_in) @ W^T, W (n_out, n_in)
            left, right = rng.random((M, P), DTYPE), rng.random((N, P), DTYPE).T
        elif name.startswith("backward"):  # δ (S, n_out) @ W (n_out, n_in)
            left, right = rng.random((M, P), DTYPE), rng.random((P, N), DTYPE)
        else:  # δ^T (n_out, S) @ a (S, n_in)
            left, right = rng.random((P, M), DTYPE).T, rng.random((P, N), DTYPE)
        out = np.empty((M, N), DTYPE)
        total_seconds += best_time(lambda: np.matmul(left, right, out=out))
        total_flops += 2 * M * N * P
    return total_flops / total_seconds / 1e9


def _float32_lanes() -> int:
    """float32 lanes of the widest vectors that fastbp's kernels use here: 16 with AVX-512 (unless
    FASTBP_VECTOR_WIDTH narrows them), else 8 (AVX2)."""
    from llvmlite import binding

    from fastbp.kernels.target import VECTOR_WIDTH

    features = numba.config.CPU_FEATURES or binding.get_host_cpu_features().flatten()
    return min(VECTOR_WIDTH, 512 if "+avx512f" in features else 256) // 32


#: independent FMA chains per thread in `fma_peak_gflops`: 12 vectors. Two FMA units with a 4-cycle
#: latency keep 8 vectors in flight (Zen 3: 5 cycles, 10); 12 vectors and the 2 constants still fit in
#: AVX2's 16 ymm registers (more would spill to memory, and the loop would time stores, not FMAs) and
#: fill 12 of AVX-512's 32 zmm. LLVM keeps the chains in registers across the rounds loop.
FMA_CHAINS = 12 * _float32_lanes()


@njit(fastmath={"contract"}, cache=True)
def _fma_chain_rounds(x0, rounds):
    """FMA_CHAINS chains x ← x·c + d from x0, `rounds` times: the vector loop over the chains is
    unrolled and its x held in registers, so the rounds loop is nothing but FMAs."""
    c, d = np.float32(0.999999), np.float32(1e-7)
    x = np.full(FMA_CHAINS, x0, np.float32)
    for _ in range(rounds):
        for v in range(FMA_CHAINS):
            x[v] = x[v] * c + d
    return x


def fma_peak_gflops(rounds: int = 250_000) -> float:
    """This machine's float32 FMA peak in GFLOP/s on Numba's threads: a loop of nothing but FMAs in
    registers, compiled by fastbp's `njit` (so at the vector width of fastbp's kernels: zmm on
    AVX-512), the ceiling of any kernel here (a dense product also loads, stores and sums).

    One core's rate times the number of threads: on a shared machine a parallel loop times the
    scheduler (both threads must hold a core at once), one thread times the core. As a ceiling it
    errs high, if anything (one busy core may clock higher than all of them).
    """
    # many short repeats: on a loaded machine, some of them catch the core to themselves
    seconds = best_time(lambda: _fma_chain_rounds(np.float32(1), rounds), min_seconds=0.1, repeats=20)
    return 2 * FMA_CHAINS * rounds * numba.get_num_threads() / seconds / 1e9


def run_training(libraries, batches, X, y, samples_small_batch, rounds, log, optimizer="sgd", activation="relu",
                 sizes=LAYER_SIZES):
    """Every library's epoch and NumPy's matmul GFLOP/s, batch by batch, so that each row of the table
    is measured side by side. Within a batch the libraries (and each library's forms) take turns for
    `rounds` rounds, each epoch from the same initial weights, and each keeps its fastest epoch: on a
    shared machine a burst of load then hits one library's round, not its only measurement.

    Returns (rows, {batch: numpy matmul GFLOP/s}).
    """
    params = initial_parameters(layer_sizes=sizes)
    X_eval, y_eval = X[:EVAL_SAMPLES], y[:EVAL_SAMPLES]
    rows, numpy_gflops = [], {}
    for batch in batches:
        n = min(samples_small_batch, len(X)) if batch == 1 and samples_small_batch else len(X)
        runners = [(lib, form) for lib in libraries if lib in TRAIN and not (lib == "sklearn" and batch == 1)
                   for form in TRAIN[lib]]
        best = {}
        for _ in range(rounds):
            for library, form in runners:
                time.sleep(PAUSE_SECONDS)
                seconds, after = TRAIN[library][form](X[:n], y[:n], batch, params, optimizer, activation)
                log(f"{DISPLAY[library]:>12} {form:>8}  batch {batch:>4}  {n:>6} samples  {seconds:8.3f} s")
                if (library, form) not in best or seconds < best[library, form][0]:
                    best[library, form] = seconds, after
        numpy_gflops[batch] = numpy_matmul_gflops(batch, sizes)
        for library in dict.fromkeys(lib for lib, _ in runners):
            forms = {form: best[lib, form][0] for lib, form in runners if lib == library}
            form = min(forms, key=forms.get)
            seconds, after = best[library, form]
            rows.append(dict(library=library, batch=batch, samples_timed=n, seconds=seconds, form=form,
                             seconds_by_form=forms, seconds_per_epoch=seconds * len(X) / n,
                             gflops=training_flops_per_sample(sizes) * n / seconds / 1e9,
                             loss_after=cross_entropy(after, X_eval, y_eval, activation)))
    return rows, numpy_gflops


def _predictors(libraries, params, activation, threads):
    """{(library, form): predict_proba} of every library and form."""
    return {(lib, form): make(params, activation, threads)
            for lib in libraries for form, make in PREDICTOR.get(lib, {}).items()}


def run_inference(libraries, n_samples, repeats, log, activation="relu", sizes=LAYER_SIZES, threads=2,
                  latency_calls=2000, latency_blocks=5):
    """predict_proba of every library on n_samples rows (best of `repeats` calls) and on one row (hot
    latency: the best of `latency_calls` calls), and agreement with fastbp. Returns the rows.

    As in training, the libraries and forms take turns, each call (each block of `latency_calls` /
    `latency_blocks` single-row calls) after PAUSE_SECONDS of idle time, so that a burst of load on the
    shared machine hits one library's turn, not all of its measurements.
    """
    params = initial_parameters(layer_sizes=sizes)
    X, _ = reference_data(n_samples, seed=1, layer_sizes=sizes)
    x1 = np.ascontiguousarray(X[:1])
    reference = predictor_fastbp(params, activation)(X)
    predictors = _predictors(libraries, params, activation, threads)
    for predict in predictors.values():
        predict(X), predict(x1)  # warm-up: compile, first use
    best = dict.fromkeys(predictors, math.inf)
    for _ in range(repeats):
        for key, predict in predictors.items():
            time.sleep(PAUSE_SECONDS)
            start = time.perf_counter()
            predict(X)
            best[key] = min(best[key], time.perf_counter() - start)
    single = _latencies(predictors, x1, latency_calls, latency_blocks)
    rows = []
    for library in dict.fromkeys(lib for lib, _ in predictors):
        forms = [form for lib, form in predictors if lib == library]
        form = min(forms, key=lambda f: best[library, f])
        single_form = min(forms, key=lambda f: single[library, f][0])
        seconds = best[library, form]
        rows.append(dict(library=library, samples=n_samples, seconds=seconds, form=form,
                         seconds_by_form={f: best[library, f] for f in forms},
                         gflops=forward_flops_per_sample(sizes) * n_samples / seconds / 1e9,
                         single_seconds=single[library, single_form][0],
                         single_median_seconds=single[library, single_form][1], single_form=single_form,
                         single_seconds_by_form={f: single[library, f][0] for f in forms},
                         max_abs_diff=float(np.abs(np.asarray(predictors[library, form](X), np.float64)
                                                   - reference).max())))
        log(f"{DISPLAY[library]:>12}  predict_proba {n_samples} samples  {seconds * 1e3:8.2f} ms ({form or '-'}); "
            f"1 sample {rows[-1]['single_seconds'] * 1e6:8.1f} µs ({single_form or '-'})")
    return rows


def _latencies(predictors, x1, calls, blocks):
    """{key: (best, median) seconds of one call predict(x1)} over `calls` calls per predictor, in
    `blocks` blocks, the predictors taking turns block by block. Each call is timed on its own."""
    per_block = max(1, calls // blocks)
    times = {key: [] for key in predictors}
    for _ in range(blocks):
        for key, predict in predictors.items():
            time.sleep(PAUSE_SECONDS)
            for _ in range(20):  # hot: the threads and caches warm again after the pause
                predict(x1)
            clock, block = time.perf_counter, times[key]
            for _ in range(per_block):
                start = clock()
                predict(x1)
                block.append(clock() - start)
    return {key: (min(t), float(np.median(t))) for key, t in times.items()}


# ============================================================================ report
def training_table(rows, libraries, numpy_gflops, samples) -> str:
    peers = [lib for lib in libraries if lib != "fastbp" and lib in TRAIN]
    header = ["batch", "fastbp s"]
    for lib in peers:
        header += [f"{DISPLAY[lib]} s", f"fastbp/{DISPLAY[lib]}"] + ([f"{DISPLAY[lib]} form"]
                                                                     if len(TRAIN[lib]) > 1 else [])
    header += ["fastbp GFLOP/s", "numpy matmul GFLOP/s", "fastbp/numpy GFLOP/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    by_key = {(r["library"], r["batch"]): r for r in rows}
    for batch in sorted({r["batch"] for r in rows}):
        ours = by_key.get(("fastbp", batch))
        scaled = any(r["batch"] == batch and r["samples_timed"] != samples for r in rows)
        cells = [f"{batch}{' *' if scaled else ''}", _seconds(ours)]
        for lib in peers:
            theirs = by_key.get((lib, batch))
            cells += [_seconds(theirs), _ratio(ours, theirs)]
            if len(TRAIN[lib]) > 1:
                cells.append("–" if theirs is None else f"`{theirs['form']}`")
        gflops = ours["gflops"] if ours else None
        cells += [_number(gflops), _number(numpy_gflops[batch]),
                  _number(gflops / numpy_gflops[batch] if gflops else None, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def peak_line(rows, peak) -> str:
    """The machine's FMA peak, and the share of it that fastbp's step reached at each batch size."""
    shares = ", ".join(f"{r['gflops'] / peak:.0%} at batch {r['batch']}" for r in rows if r["library"] == "fastbp")
    return (f"This machine's float32 FMA peak on {numba.get_num_threads()} threads: {peak:.0f} GFLOP/s "
            f"(`fma_peak_gflops`: FMAs in registers only, one core's rate × threads). fastbp's step ran at {shares}.")


def peak_warnings(training, numpy_gflops, inference, peak) -> list[str]:
    """A loud line for every GFLOP/s of this run above the measured FMA peak: then the peak is wrong
    (measured below the CPU's width, or disturbed by load) or a FLOP count is."""
    measured = [(f"{DISPLAY[r['library']]} training at batch {r['batch']}", r["gflops"]) for r in training]
    measured += [(f"NumPy matmul at batch {batch}", g) for batch, g in numpy_gflops.items()]
    measured += [(f"{DISPLAY[r['library']]} inference", r["gflops"]) for r in inference]
    return [f"**WARNING: peak is wrong: {what} ran at {gflops:.0f} GFLOP/s, above the measured FMA peak of "
            f"{peak:.0f} GFLOP/s.**" for what, gflops in measured if gflops > peak]


def loss_table(rows, libraries) -> str:
    libraries = [lib for lib in libraries if lib in TRAIN]
    header = ["batch"] + [DISPLAY[lib] for lib in libraries]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    by_key = {(r["library"], r["batch"]): r for r in rows}
    for batch in sorted({r["batch"] for r in rows}):
        cells = [str(batch)] + [f"{by_key[(lib, batch)]['loss_after']:.4f}" if (lib, batch) in by_key else "–"
                                for lib in libraries]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inference_table(rows) -> str:
    ours = next((r for r in rows if r["library"] == "fastbp"), None)
    n = f"{rows[0]['samples']:,}" if rows else ""
    lines = [f"| library | {n} samples ms | fastbp/library | GFLOP/s | 1 sample µs (best) | 1 sample µs (median) "
             "| fastbp/library (1 sample) | form (N; 1) | max abs difference from fastbp |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        single = "–" if ours is None else f"{ours['single_seconds'] / r['single_seconds']:.2f}"
        forms = "–" if not (r["form"] or r["single_form"]) else f"`{r['form']}`; `{r['single_form']}`"
        lines.append(f"| {DISPLAY[r['library']]} | {r['seconds'] * 1e3:.2f} | {_ratio(ours, r)} | "
                     f"{r['gflops']:.1f} | {r['single_seconds'] * 1e6:.1f} | {r['single_median_seconds'] * 1e6:.1f} | "
                     f"{single} | {forms} | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def _seconds(row) -> str:
    return "–" if row is None else f"{row['seconds_per_epoch']:.3g}"


def _ratio(ours, theirs) -> str:
    return "–" if ours is None or theirs is None else f"{ours['seconds'] / theirs['seconds']:.2f}"


def _number(x, digits=1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def plot(rows, libraries, path, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=90)
    for lib in libraries:
        points = sorted((r["batch"], r["seconds_per_epoch"]) for r in rows if r["library"] == lib)
        if points:
            ax.plot(*zip(*points), marker="o", label=DISPLAY[lib])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    batches = sorted({r["batch"] for r in rows})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("seconds per epoch (lower is better)")
    ax.set_title(title, fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def optimizer_label(args) -> str:
    label = f"SGD lr {LEARNING_RATE}" if args.optimizer == "sgd" else f"Adam lr {ADAM_LR}"
    return label if args.activation == "relu" else f"{args.activation}, {label}"


def plot_title(args, info) -> str:
    sizes = "-".join(map(str, args.sizes))
    small = (f"batch 1 timed on {args.samples_small_batch:,} samples and scaled · "
             if args.samples_small_batch and 1 in args.batches else "")
    return (f"MLP {sizes}, {optimizer_label(args)}, one epoch of {args.samples:,} samples, float32, "
            f"best of {args.rounds}\n"
            f"{small}{info['cpu']}, {info['cores']} cores, {info['date']}")


def environment(threads: int) -> dict:
    """Where and with what the numbers were measured."""
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                cpu=_cpu_model(), cores=os.cpu_count(), python=platform.python_version(), threads=threads,
                env={k: v for k, v in os.environ.items()
                     if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "NUMBA_", "XLA_"))})
    for library, (module, *_) in MODULES.items():
        if importlib.util.find_spec(module):
            info[library] = __import__(module).__version__
    info["numpy"] = np.__version__
    info["numba"] = numba.__version__
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [f"{p['internal_api']} {p['version']} {p.get('architecture')} {p['num_threads']} threads"
                        for p in threadpool_info() if p["user_api"] == "blas"]
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ============================================================================ command line
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(LAYER_SIZES), metavar="N",
                        help="layer sizes n_0 ... n_L (default the reference 784 256 128 10); "
                             "e.g. 784 1024 1024 10")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 128, 512])
    parser.add_argument("--samples", type=int, default=60_000, help="samples per epoch (default 60000)")
    parser.add_argument("--samples-small-batch", type=int, default=0, metavar="N",
                        help="at batch 1, time only the first N samples and scale the time to --samples "
                             "(marked * in the table); 0 = time them all")
    parser.add_argument("--inference-samples", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="epochs timed per (library, batch), the libraries taking turns; the best is kept")
    parser.add_argument("--repeats", type=int, default=10,
                        help="inference calls per library, the libraries taking turns; the best is kept")
    parser.add_argument("--latency-calls", type=int, default=2000,
                        help="single-sample predict_proba calls per library and form (default 2000); the best "
                             "is kept")
    parser.add_argument("--latency-blocks", type=int, default=5,
                        help="the latency calls come in this many blocks, the libraries taking turns")
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES),
                        help="the ones not installed are skipped")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="SGD lr 0.01 (the reference job), or Adam with PyTorch's defaults in every library")
    parser.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="relu",
                        help="the hidden layers' activation (relu: the reference job; sigmoid is scikit-learn's "
                             "'logistic')")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads and ONNX Runtime's intra-op threads (default 2)")
    parser.add_argument("--plot", type=Path, help="write a PNG plot of seconds per epoch vs batch size")
    parser.add_argument("--json", type=Path, help="write every measurement as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 4096 samples (512 at batch 1), 2000 for inference, 2 repeats, "
                             "200 latency calls")
    args = parser.parse_args(argv)
    if len(args.sizes) < 2 or min(args.sizes) < 1 or args.sizes[-1] < 2:
        parser.error(f"--sizes {' '.join(map(str, args.sizes))}: give at least an input and an output size, all "
                     "positive, at least 2 classes")
    args.sizes = tuple(args.sizes)
    if args.quick:
        args.samples, args.samples_small_batch, args.inference_samples, args.repeats = 4096, 512, 2000, 2
        args.latency_calls, args.latency_blocks = 200, 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    libraries = [lib for lib in args.libraries if all(importlib.util.find_spec(m) for m in MODULES[lib])]
    if "fastbp" not in libraries:
        raise SystemExit("fastbp is not importable: pip install -e . from the repository root")
    if args.optimizer == "adam" and "jax" in libraries and not importlib.util.find_spec("optax"):
        libraries.remove("jax")  # JAX's Adam is optax's
        log("optax is not installed: JAX skipped for Adam (pip install optax)")
    skipped = sorted(set(args.libraries) - set(libraries))
    if skipped:
        log(f"not installed, skipped: {', '.join(DISPLAY[lib] for lib in skipped)}")
    if "torch" in libraries:
        import torch

        torch.set_num_threads(args.threads)
    X, y = reference_data(args.samples, layer_sizes=args.sizes)
    load_before = os.getloadavg()[0]
    training, numpy_gflops = run_training(libraries, args.batches, X, y, args.samples_small_batch, args.rounds,
                                          log, args.optimizer, args.activation, args.sizes)
    inference = run_inference(libraries, args.inference_samples, args.repeats, log, args.activation, args.sizes,
                              args.threads, args.latency_calls, args.latency_blocks)
    peak = fma_peak_gflops()
    for line in peak_warnings(training, numpy_gflops, inference, peak):
        log(line)
    info = environment(args.threads)
    info["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    report = _report(args, libraries, training, numpy_gflops, peak, inference, info)
    print(report)
    results = dict(environment=info, arguments={k: str(v) for k, v in vars(args).items()}, training=training,
                   numpy_matmul_gflops=numpy_gflops, fma_peak_gflops=peak, inference=inference)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(training, libraries, args.plot, plot_title(args, info))
        log(f"plot written to {args.plot}")
    return results


def _report(args, libraries, training, numpy_gflops, peak, inference, info) -> str:
    sizes = "-".join(map(str, args.sizes))
    jax_note = (" JAX form: the weight layout that won, W (n_out, n_in) with `x @ W.T` or W (n_in, n_out) "
                "with `x @ W` (both timed, taking turns)." if "jax" in libraries else "")
    small = (f" * batch 1: {args.samples_small_batch:,} samples timed, scaled to {args.samples:,}."
             if args.samples_small_batch and 1 in args.batches else "")
    return "\n".join([
        f"## Training: seconds per epoch, MLP {sizes}, {args.samples:,} samples, {optimizer_label(args)}, float32",
        "",
        training_table(training, libraries, numpy_gflops, args.samples),
        "",
        f"fastbp/peer < 1: fastbp is faster.{small}{jax_note} GFLOP/s count the whole step "
        f"({training_flops_per_sample(args.sizes):,} FLOP per sample); numpy matmul GFLOP/s: NumPy's matmul on the "
        "same step's contractions at that batch size, measured in this run.",
        "",
        peak_line(training, peak),
        "",
        *[line + "\n" for line in peak_warnings(training, numpy_gflops, inference, peak)],
        f"Best of {args.rounds} epoch(s) per cell. Loss on the first {EVAL_SAMPLES:,} samples after the epoch "
        "(the same job gives the same loss):",
        "",
        loss_table(training, libraries),
        "",
        f"## Inference: predict_proba on {args.inference_samples:,} samples (best of {args.repeats}) and on "
        f"1 sample (hot, best of {args.latency_calls:,} calls in {args.latency_blocks} blocks), MLP {sizes}",
        "",
        inference_table(inference),
        "",
        "fastbp/library < 1: fastbp is faster. Form: the faster of a library's forms on N samples and on 1 "
        "(PyTorch: `no_grad` or `inference_mode`; JAX: the weight layout). ONNX Runtime: "
        f"{args.threads} intra-op threads, sequential, all graph optimizations.",
        "",
        f"{info['date']} · {info['cpu']} · {info['cores']} cores · load average {info['load_average'][0]} before, "
        f"{info['load_average'][1]} after · torch threads {args.threads} · "
        f"BLAS {', '.join(info.get('blas', []))} · env {info['env'] or '{}'}",
    ])


if __name__ == "__main__":
    main()
