"""tensorwire.frameworks: JAX/Flax and Keras tensors in and out of tensorwire (torch:
tests/test_torch.py)."""

from __future__ import annotations

import collections

import ml_dtypes
import numpy as np
import pytest

import tensorwire as tw
from tensorwire import frameworks
from tensorwire.formats import safetensors


def test_to_keras_flattens_in_order_and_round_trips():
    weights = [np.ones((3, 2), np.float32), np.zeros(2, np.float32), np.arange(4, dtype=np.int64)]
    back = tw.decode(tw.encode(weights, codec="zstd"))
    out = frameworks.to_keras(back)
    assert isinstance(out, list) and len(out) == 3
    for got, want in zip(out, weights):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    nested = {"dense": {"kernel": weights[0], "bias": weights[1]}, "head": [weights[2]]}
    assert [a.shape for a in frameworks.to_keras(nested)] == [(3, 2), (2,), (4,)]


def test_to_numpy_keeps_structure_and_shares_memory():
    Point = collections.namedtuple("Point", "x y")
    a = np.arange(6.0)
    tree = {"p": Point(a, [a[:2]]), "t": (a,)}
    out = frameworks.to_numpy(tree)
    assert isinstance(out["p"], Point) and isinstance(out["t"], tuple)
    assert out["p"].x is a and np.shares_memory(out["p"].y[0], a)


def test_convert_refuses_unknown_frameworks_and_leaves():
    with pytest.raises(tw.InputError, match="unknown framework"):
        frameworks.convert({"a": np.ones(1)}, "mxnet")
    with pytest.raises(tw.InputError, match="'a/0'"):
        frameworks.to_numpy({"a": [object()]})
    deep: list = []
    node = deep
    for _ in range(70):
        node.append([])
        node = node[0]
    with pytest.raises(tw.InputError, match="deeper"):
        frameworks.to_numpy(deep)


# --------------------------------------------------------------------------------------
# JAX / Flax


def test_jax_flax_pytree_round_trip(tmp_path):
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jnp = jax.numpy

    params = {
        "params": {
            "Dense_0": {"kernel": jnp.ones((4, 3), jnp.float32), "bias": jnp.zeros(3, jnp.float32)},
            "Embed_0": {"embedding": jnp.arange(12, dtype=jnp.bfloat16).reshape(3, 4)},
        },
        "batch_stats": ({"mean": jnp.full((3,), 0.5)},),
    }
    path = tmp_path / "flax.tw"
    tw.save(params, path, codec="shuffle+zstd")
    back = frameworks.to_jax(tw.load(path))
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for got, want in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)):
        assert isinstance(got, jax.Array)
        assert got.dtype == want.dtype and bool(jnp.all(got == want))


def test_jax_aliases_aligned_payload_memory(tmp_path):
    jax = pytest.importorskip("jax", reason="jax is not installed")
    if jax.default_backend() != "cpu":
        pytest.skip("aliasing host memory is a CPU-backend property")
    w = np.arange(4096, dtype=np.float32).reshape(64, 64)
    path = tmp_path / "w.tw"
    tw.save({"w": w}, path)
    decoded = tw.load(path)  # memory-mapped: every tensor starts 64-byte aligned
    (j,) = frameworks.to_jax(decoded).values()
    assert j.unsafe_buffer_pointer() == decoded["w"].ctypes.data
    assert np.array_equal(np.asarray(j), w)


def test_jax_bfloat16_from_safetensors():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    x = np.linspace(-2, 2, 10).astype(ml_dtypes.bfloat16)
    back = frameworks.to_jax(safetensors.loads(safetensors.dumps({"x": x})))
    assert back["x"].dtype == jax.numpy.bfloat16
    assert np.asarray(back["x"]).tobytes() == x.tobytes()


def test_decode_framework_argument_dispatches_and_validates():
    w = [np.arange(6, dtype=np.float32).reshape(2, 3)]
    blob = tw.encode(w)
    assert isinstance(tw.decode(blob, framework="keras"), list)
    assert isinstance(tw.decode(blob, framework="numpy")[0], np.ndarray)
    with pytest.raises(tw.InputError, match="unknown framework"):
        tw.decode(blob, framework="tensorflow")
