"""torch for real: modules, dtypes, layouts, devices and a federated round through
tensorwire. `make torch` installs the pinned torch (requirements-torch.txt) into a cache
and links it into .venv; without it these tests skip, except in CI, where they fail."""

from __future__ import annotations

import collections
import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import tensorwire as tw
from tensorwire import fl, frameworks

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------
# modules


def _cnn(torch: Any) -> Any:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )


def _transformer(torch: Any) -> Any:
    return torch.nn.TransformerEncoderLayer(
        d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True
    )


def _train_step(torch: Any, model: Any, x: Any, seed: int) -> None:
    """One SGD step on a fixed random target (batchnorm's running stats move, and its
    ``num_batches_tracked`` counts the step)."""
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(x)
    loss = ((out - torch.randn_like(out)) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.eval()


def _fresh(torch: Any, make: Any, seed: int) -> Any:
    torch.manual_seed(seed)
    return make(torch).eval()


def _bytes_equal(torch: Any, a: Any, b: Any) -> bool:
    """Same dtype, shape and bits (NaNs and signed zeros included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))


@pytest.mark.parametrize("make", [_cnn, _transformer], ids=["cnn", "transformer"])
@pytest.mark.parametrize("route", ["save-load", "encode-decode"])
def test_module_round_trip_loads_strictly_and_computes_the_same(
    torch: Any, make: Any, route: str, tmp_path: Path
) -> None:
    x = torch.randn(2, 3, 6, 6) if make is _cnn else torch.randn(2, 5, 16)
    model = _fresh(torch, make, 0)
    _train_step(torch, model, x, seed=1)
    sd = model.state_dict()
    if make is _cnn:
        assert sd["1.num_batches_tracked"].dtype == torch.int64
        assert int(sd["1.num_batches_tracked"]) == 1
    if route == "save-load":
        tw.save(sd, tmp_path / "model.tw", codec="shuffle+zstd")
        back = frameworks.to_torch(tw.load(tmp_path / "model.tw"))
    else:
        back = tw.decode(tw.encode(sd, codec="auto"), framework="torch")
    assert list(back) == list(sd)
    for name, t in sd.items():
        assert _bytes_equal(torch, back[name], t), name
    other = _fresh(torch, make, 99)  # other weights, so the load has to change them all
    assert not torch.equal(other(x), model(x))
    other.load_state_dict(back, strict=True)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
    if make is _cnn:
        assert int(other.state_dict()["1.num_batches_tracked"]) == 1


def test_parameters_that_require_grad(torch: Any) -> None:
    model = _fresh(torch, _transformer, 0)
    params = dict(model.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    for source in (params, model.state_dict(keep_vars=True)):
        blob = tw.encode(source)
        numpy_view = frameworks.to_numpy(source)
        for name, p in source.items():  # detached, and zero-copy all the same
            assert numpy_view[name].ctypes.data == p.data_ptr(), name
        back = tw.decode(blob, copy=True, framework="torch")
        other = _fresh(torch, _transformer, 7)
        with torch.no_grad():
            for name, p in other.named_parameters():
                p.copy_(back[name])
        for name, p in other.named_parameters():
            assert p.requires_grad and torch.equal(p, params[name]), name


def test_state_dict_round_trip_every_dtype(torch: Any) -> None:
    sd = collections.OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, 3)),
            ("bn.num_batches_tracked", torch.tensor(7)),
            ("emb.weight", torch.randn(5, 8).to(torch.bfloat16)),
            ("q.scale", torch.randn(8).to(torch.float8_e4m3fn)),
            ("q.grad_scale", torch.randn(8).to(torch.float8_e5m2)),
            ("mask", torch.rand(6) > 0.5),
            ("half", torch.randn(3).half()),
            ("ids", torch.arange(10, dtype=torch.int64)),
            ("cplx", torch.randn(2, dtype=torch.complex64)),
        ]
    )
    back = frameworks.to_torch(tw.decode(tw.encode(frameworks.to_numpy(sd), codec="zstd")))
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert _bytes_equal(torch, back[k], v), k


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("codec", ["raw", "shuffle+zstd", "xor+zstd"])
def test_low_precision_tensors_bit_exact(torch: Any, dtype: str, codec: str) -> None:
    t = (torch.randn(64, 33) * 4).to(getattr(torch, dtype))
    t[0, :4] = torch.tensor([0.0, -0.0, 448.0 if "e4m3" in dtype else 1.5, -1.0])
    base = {"w": torch.zeros_like(t)} if codec.startswith("xor") else None
    arrays = tw.decode(tw.encode({"w": t}, codec=codec, base=base), base=base)
    assert arrays["w"].dtype == np.dtype(getattr(ml_dtypes, dtype))
    back = frameworks.to_torch(arrays)["w"]
    assert _bytes_equal(torch, back, t)


def test_bfloat16_module_computes_the_same_after_the_trip(torch: Any) -> None:
    model = _fresh(torch, _cnn, 3).to(torch.bfloat16)
    x = torch.randn(2, 3, 6, 6, dtype=torch.bfloat16)
    other = _fresh(torch, _cnn, 4).to(torch.bfloat16)
    other.load_state_dict(tw.decode(tw.encode(model.state_dict()), framework="torch"))
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


# --------------------------------------------------------------------------------------
# layouts: strided tensors, shared storage, zero copy


def test_non_contiguous_tensors_are_stored_contiguous_with_exact_values(torch: Any) -> None:
    base = torch.arange(4 * 6 * 5, dtype=torch.float32).reshape(4, 6, 5)
    conv = torch.randn(8, 3, 3, 3).to(memory_format=torch.channels_last)
    tensors = {
        "transposed": base[0].t(),
        "stepped": base[:, ::2, 1:],
        "broadcast": torch.arange(3.0).expand(4, 3),  # stride 0
        "channels_last": conv,
        "bf16_transposed": base[1].to(torch.bfloat16).t(),
        "offset_view": base.view(-1)[7:19].view(3, 4),  # contiguous, storage offset 7
    }
    assert not any(t.is_contiguous() for k, t in tensors.items() if k != "offset_view")
    back = tw.decode(tw.encode(tensors), framework="torch")
    for k, t in tensors.items():
        assert back[k].is_contiguous() and _bytes_equal(torch, back[k], t.contiguous()), k
    # the module, not the payload, keeps its own layout: loading copies into it
    model = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    model.load_state_dict({"weight": back["channels_last"], "bias": torch.zeros(8)})
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(model.weight, conv)


class _Tied:
    """An embedding and an output head that share one weight (as language models tie
    them)."""

    @staticmethod
    def make(torch: Any) -> Any:
        nn = torch.nn
        model = nn.ModuleDict({"emb": nn.Embedding(10, 8), "head": nn.Linear(8, 10, bias=False)})
        model["head"].weight = model["emb"].weight
        return model


def test_tied_weights_round_trip_stored_once_per_name(torch: Any) -> None:
    model = _fresh(torch, _Tied.make, 0)
    sd = model.state_dict()
    assert sd["emb.weight"].data_ptr() == sd["head.weight"].data_ptr()  # one storage
    nbytes = sd["emb.weight"].nbytes
    blob = tw.encode(sd)
    with tw.open(blob) as r:  # the format has no aliases: each name has its own bytes
        assert [r.info(n).stored_bytes for n in r.keys()] == [nbytes, nbytes]
    assert len(tw.encode({"emb.weight": sd["emb.weight"]})) + nbytes <= len(blob)
    back = tw.decode(blob, framework="torch")
    assert back["emb.weight"].data_ptr() != back["head.weight"].data_ptr()
    assert torch.equal(back["emb.weight"], back["head.weight"])
    other = _fresh(torch, _Tied.make, 5)
    other.load_state_dict(back, strict=True)
    assert other["head"].weight is other["emb"].weight  # the module keeps its tie
    assert torch.equal(other["emb"].weight, model["emb"].weight)
    # views of one storage at different offsets are separate tensors too
    flat = torch.arange(12.0)
    halves = {"a": flat[:6], "b": flat[6:].view(2, 3)}
    got = tw.decode(tw.encode(halves), framework="torch")
    assert all(torch.equal(got[k], v) for k, v in halves.items())


SAVE_PEAK = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from local_process import peak_mib
    import torch
    import tensorwire as tw

    t = torch.ones(4096, 4096)  # 64 MiB, resident before anything is measured
    tw.save({"w": t[:8]}, sys.argv[2])  # warm: the first save's own allocations
    before = peak_mib()
    tw.save({"w": t}, sys.argv[2])  # read in place and streamed to the file
    contiguous = peak_mib() - before
    before = peak_mib()
    tw.save({"w": t.t()}, sys.argv[2])  # transposed: one C-order copy of it first
    print(contiguous, peak_mib() - before)
    """
)


def test_encode_reads_tensor_memory_without_a_copy(torch: Any, tmp_path: Path) -> None:
    """A contiguous tensor is stored straight from its memory: saving 64 MiB raises the
    peak by almost nothing, while a transposed one costs its one documented copy
    (which shows the measurement sees a copy when there is one)."""
    w = torch.randn(64, 64)
    assert frameworks.to_numpy({"w": w})["w"].ctypes.data == w.data_ptr()
    b = torch.randn(64, 64).to(torch.bfloat16)
    assert frameworks.to_numpy([b])[0].ctypes.data == b.data_ptr()
    result = subprocess.run(
        [sys.executable, "-c", SAVE_PEAK, str(Path(__file__).parent), str(tmp_path / "w.tw")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    contiguous, transposed = map(int, result.stdout.split())
    assert contiguous < 8, f"saving a contiguous 64 MiB tensor raised the peak {contiguous} MiB"
    assert transposed >= 48, f"the transposed copy did not show: {transposed} MiB"


def test_decode_without_copy_shares_the_payload(torch: Any, tmp_path: Path) -> None:
    sd = _fresh(torch, _cnn, 0).state_dict()
    sd["emb"] = torch.randn(7, 9).to(torch.bfloat16)
    blob = tw.encode(sd)
    start = np.frombuffer(blob, np.uint8).ctypes.data
    arrays = tw.decode(blob)
    tensors = frameworks.to_torch(arrays)
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        assert ptr == t.data_ptr() == arrays[name].ctypes.data, name
        assert start <= ptr and ptr + t.nbytes <= start + len(blob), name
        assert (ptr - start) % 64 == 0, name  # stored 64-byte aligned in the payload
        assert _bytes_equal(torch, t, sd[name]), name
    # a file: the tensors are views of its memory map
    tw.save(sd, tmp_path / "m.tw")
    loaded = tw.load(tmp_path / "m.tw")
    mapped = frameworks.to_torch(loaded)
    for name, t in mapped.items():  # the map starts on a page: aligned in memory too
        assert t.data_ptr() == loaded[name].ctypes.data and t.data_ptr() % 64 == 0, name
    # copy=True gives tensors of their own, writable
    own = tw.decode(blob, copy=True, framework="torch")
    assert all(own[n].data_ptr() != tensors[n].data_ptr() for n in sd)
    own["0.weight"].add_(1)
    assert torch.equal(own["0.weight"], sd["0.weight"] + 1)


def test_shares_memory_with_decoded_arrays(torch: Any) -> None:
    w = torch.randn(32, 32)
    arrays = tw.decode(tw.encode({"w": w.numpy()}), copy=True)  # writable
    t = frameworks.to_torch(arrays)["w"]
    assert t.data_ptr() == arrays["w"].ctypes.data
    t.add_(1)
    assert np.array_equal(arrays["w"], (w + 1).numpy())
    views = tw.decode(tw.encode({"w": w.numpy()}))  # read-only views into the payload
    shared = frameworks.to_torch(views)["w"]
    assert shared.data_ptr() == views["w"].ctypes.data
    own = frameworks.to_torch(views, copy=True)["w"]
    assert own.data_ptr() != views["w"].ctypes.data and torch.equal(own, w)
    # big-endian arrays (e.g. from an npz) arrive in native order
    be = np.arange(4, dtype=">i4")
    assert frameworks.to_torch([be])[0].tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------
# devices


def _on_device(torch: Any, data: Any, device: str) -> Any:
    """``data`` (a CPU tensor) in a tensor that reports ``device``: there is no GPU
    here, so this stands in for a CUDA tensor. Every operation runs on ``data``; copying
    to the CPU (``.cpu()``) gives ``data``'s values in a plain CPU tensor."""
    from torch.utils._pytree import tree_map

    class OnDevice(torch.Tensor):
        @staticmethod
        def __new__(cls, inner: Any) -> Any:
            return torch.Tensor._make_wrapper_subclass(
                cls, inner.shape, dtype=inner.dtype, device=device, strides=inner.stride()
            )

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        @classmethod
        def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None):
            def unwrap(x: Any) -> Any:
                return x.inner if isinstance(x, OnDevice) else x

            out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))
            return OnDevice(out) if func is torch.ops.aten.detach.default else out

    return OnDevice(data)


def test_tensors_off_the_cpu_are_refused_unless_moved_explicitly(torch: Any) -> None:
    meta = torch.nn.Linear(3, 2, device="meta").state_dict()
    for convert in (tw.encode, frameworks.to_numpy, lambda sd: tw.encode_update(sd, sd)):
        with pytest.raises(tw.InputError, match=r"tensor 'weight' is on device meta.*to_cpu=True"):
            convert(meta)
    with pytest.raises(tw.InputError, match="'weight' is on device meta: it holds no data"):
        frameworks.to_numpy(meta, to_cpu=True)
    data = torch.randn(4, 3)
    gpu = {"fc": {"weight": _on_device(torch, data, "cuda:0")}}
    assert gpu["fc"]["weight"].device == torch.device("cuda:0")
    with pytest.raises(tw.InputError, match=r"tensor 'fc/weight' is on device cuda:0"):
        tw.encode(gpu)
    moved = frameworks.to_numpy(gpu, to_cpu=True)
    assert np.array_equal(moved["fc"]["weight"], data.numpy())
    back = tw.decode(tw.encode(moved), framework="torch")
    assert torch.equal(back["fc"]["weight"], data)


# --------------------------------------------------------------------------------------
# a federated round


def _quantised_bound(d: np.ndarray) -> np.ndarray:
    """codecs.md's bound of the ``f16`` stage on each element of ``d``."""
    return np.maximum(np.abs(d) * 2.0**-11, 2.0**-25)


def test_encode_update_round_between_two_modules(torch: Any) -> None:
    """Two clients train from the server's model and send f16-quantised differences;
    the server aggregates them against its base and loads the result strictly. Every
    float element is within the f16 bound of each difference (weighted) plus float32
    accumulation; the integer step counter is exact (mean rounded half to even)."""
    x = torch.randn(4, 3, 6, 6)
    server = _fresh(torch, _cnn, 0)
    base = {k: v.clone() for k, v in server.state_dict().items()}
    samples = [100, 300]
    clients, updates = [], []
    for i, n in enumerate(samples):
        client = _fresh(torch, _cnn, 50 + i)
        client.load_state_dict(tw.decode(tw.encode(base), framework="torch"), strict=True)
        for step in range(i + 1):  # the second client trains two steps
            _train_step(torch, client, x, seed=10 * i + step)
        clients.append(client.state_dict())
        updates.append(
            tw.encode_update(
                base,
                client.state_dict(),
                codec=lambda name, a: "f16+shuffle+zstd" if a.dtype.kind == "f" else "zstd",
                round=3,
                client_id=f"c{i}",
                num_samples=n,
            )
        )
    assert [fl.update_info(u).samples for u in updates] == samples
    result = tw.aggregate(updates, weights="samples", base=base, round=3)
    server.load_state_dict(frameworks.to_torch(result), strict=True)
    total = sum(samples)
    for name, b in base.items():
        got = server.state_dict()[name].numpy().astype(np.float64)
        b64 = b.numpy().astype(np.float64)
        diffs = [c[name].numpy().astype(np.float64) - b64 for c in clients]
        want = b64 + sum(w * d for w, d in zip(samples, diffs)) / total
        if b.dtype == torch.int64:
            assert np.array_equal(got, np.rint(want)), name  # (1*100 + 2*300)/400 -> 2
            continue
        eps = float(np.finfo(np.float32).eps)
        bound = sum(w * _quantised_bound(d) for w, d in zip(samples, diffs)) / total
        bound += 4 * eps * (np.abs(b64) + sum(w * np.abs(d) for w, d in zip(samples, diffs)))
        assert np.all(np.abs(got - want) <= bound), name
    assert int(server.state_dict()["1.num_batches_tracked"]) == 2
    assert not torch.equal(server.state_dict()["0.weight"], base["0.weight"])  # it moved
    with torch.no_grad():
        assert torch.isfinite(server(x)).all()


# --------------------------------------------------------------------------------------
# the installation


def test_torch_from_the_cache_leaves_the_venv_packages_first(torch: Any) -> None:
    """`make torch` links its cache after site-packages: the venv's own numpy, ml_dtypes,
    jax and typing_extensions (the cache holds one too) win; in CI, torch is the pinned
    version."""
    pin = re.search(r"^torch==(\S+)", (ROOT / "requirements-torch.txt").read_text(), re.M)
    assert pin is not None
    if os.environ.get("CI"):
        assert torch.__version__.split("+")[0] == pin[1]
    root = Path(torch.__file__).resolve().parents[1]
    if root == Path(np.__file__).resolve().parents[1]:
        if os.environ.get("CI"):
            pytest.fail(f"torch is installed into the venv itself ({root}), not by `make torch`")
        pytest.skip("torch is installed into the venv itself")
    for name in ("numpy", "ml_dtypes", "jax", "typing_extensions"):
        module = importlib.import_module(name)
        assert root not in Path(module.__file__ or "").resolve().parents, name
