"""Round trips, zero-copy, structures and the file API of the core container."""

from __future__ import annotations

import gc
import os

import ml_dtypes
import numpy as np
import pytest
import spec_reader
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorwire as tw
from tensorwire import _container, _core, errors

STANDARD = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
]  # fmt: skip
EXTRA = [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality (NaN payloads and -0.0 included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def layouts(a: np.ndarray) -> list[np.ndarray]:
    """The same values in C order, Fortran order, big-endian, and as a strided view."""
    out = [a, np.asfortranarray(a)]
    if a.dtype.itemsize > 1 and a.dtype.kind in "iufc":
        out.append(a.astype(a.dtype.newbyteorder(">")))
    if a.ndim >= 1:
        big = np.repeat(a, 2, axis=-1)
        out.append(big[..., ::2])
    return out


arrays = hnp.arrays(
    dtype=st.sampled_from([np.dtype(d) for d in STANDARD]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)


@given(arrays)
def test_round_trip_every_dtype_shape_and_layout(a):
    for x in layouts(a):
        out = tw.decode(tw.encode({"x": x}))["x"]
        assert out.dtype == a.dtype.newbyteorder("=") or out.dtype == a.dtype
        assert same(out, x.astype(x.dtype.newbyteorder("<"), order="C"))
        assert np.array_equal(out, x, equal_nan=x.dtype.kind in "fc")


@pytest.mark.parametrize("dtype", EXTRA, ids=lambda d: np.dtype(d).name)
def test_ml_dtypes_round_trip(dtype):
    a = np.linspace(-3, 3, 24, dtype=np.float32).astype(dtype).reshape(2, 3, 4)
    out = tw.decode(tw.encode({"a": a}))["a"]
    assert out.dtype == np.dtype(dtype)
    assert same(out, a)
    assert tw.open(tw.encode({"a": a})).info("a").dtype == np.dtype(dtype).name


def test_nan_payloads_and_negative_zero_are_exact():
    a = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf], np.float32)
    a.view(np.uint32)[0] = 0x7FC0_1234  # a NaN with a payload
    assert same(tw.decode(tw.encode({"a": a}))["a"], a)


leaf = hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
trees = st.recursive(
    leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(
            st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s), kids, max_size=3
        ),
    ),
    max_leaves=8,
)


def assert_tree_equal(a, b):
    assert type(a) is type(b) or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_tree_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tree_equal(x, y)
    else:
        assert same(np.asarray(a), np.asarray(b))


@given(
    st.one_of(st.lists(trees, max_size=3), st.dictionaries(st.text(max_size=5), trees, max_size=3))
)
def test_nested_structures_round_trip(tree):
    assert_tree_equal(tw.decode(tw.encode(tree)), tree)


def test_keras_style_list_and_names():
    weights = [np.ones((3, 2), np.float32), np.zeros(2, np.float32)]
    blob = tw.encode(weights)
    out = tw.decode(blob)
    assert isinstance(out, list) and len(out) == 2
    assert tw.open(blob).keys() == ["0", "1"]
    nested = {"enc": {"w": weights[0]}, "dec": (weights[1],)}
    assert tw.open(tw.encode(nested)).keys() == ["enc/w", "dec/0"]


def test_empty_inputs():
    assert tw.decode(tw.encode({})) == {}
    assert tw.decode(tw.encode([])) == []


def test_decode_is_zero_copy_read_only_and_keeps_source_alive():
    a = np.arange(1000, dtype=np.float32).reshape(10, 100)
    blob = tw.encode({"a": a, "b": a[:3]})
    out = tw.decode(blob)
    raw = np.frombuffer(blob, np.uint8)
    assert np.shares_memory(out["a"], raw) and np.shares_memory(out["b"], raw)
    assert not out["a"].flags.writeable
    with pytest.raises(ValueError):
        out["a"][0, 0] = 1
    del blob, raw
    gc.collect()
    assert np.array_equal(out["a"], a)  # the arrays hold the payload alive


def test_copy_gives_owned_writable_arrays():
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    blob = tw.encode({"a": a})
    out = tw.decode(blob, copy=True)["a"]
    assert out.flags.writeable and out.flags.owndata
    assert not np.shares_memory(out, np.frombuffer(blob, np.uint8))
    out[0, 0] = 99
    assert tw.decode(blob)["a"][0, 0] == 0


@pytest.mark.parametrize("wrap", [bytearray, memoryview, lambda b: memoryview(bytearray(b))])
def test_decode_accepts_any_bytes_like(wrap):
    a = np.arange(5, dtype=np.uint16)
    out = tw.decode(wrap(tw.encode({"a": a})))["a"]
    assert same(out, a) and not out.flags.writeable


def test_every_tensor_is_64_byte_aligned():
    blob = tw.encode({f"t{i}": np.ones(i, np.complex128) for i in range(1, 10)})
    start = np.frombuffer(blob, np.uint8).ctypes.data
    for v in tw.decode(blob).values():
        assert (v.ctypes.data - start) % 64 == 0
        assert v.flags.aligned


def test_metadata_round_trips_and_must_be_json():
    meta = {"round": 3, "client": "ü-7", "lr": 0.1, "tags": [None, True]}
    r = tw.open(tw.encode({"a": np.zeros(1)}, metadata=meta))
    assert r.metadata == meta
    assert tw.open(tw.encode({"a": np.zeros(1)})).metadata is None
    with pytest.raises(tw.InputError, match="JSON"):
        tw.encode({"a": np.zeros(1)}, metadata={"x": object()})
    with pytest.raises(tw.InputError, match="JSON"):
        tw.encode({"a": np.zeros(1)}, metadata={"x": float("nan")})


@pytest.mark.parametrize(
    "bad",
    [
        np.array([object()], dtype=object),
        np.array(["a", "b"]),
        np.array([b"a"]),
        np.zeros(2, dtype=[("x", "f4"), ("y", "i4")]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(2, dtype=np.longdouble) if np.dtype(np.longdouble).itemsize > 8 else None,
    ],
)
def test_unsupported_dtypes_are_refused_clearly(bad):
    if bad is None:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(tw.InputError, match="'w': unsupported dtype"):
        tw.encode({"w": bad})


@pytest.mark.parametrize(
    "bad, match",
    [
        ({1: np.zeros(1)}, "keys must be str"),
        ({"a": {2: np.zeros(1)}}, "keys must be str"),
        ({"a": "text"}, "expected an array"),
        ({"a": None}, "expected an array"),
        (np.zeros(3), "mapping, a list"),
        ("abc", "mapping, a list"),
    ],
)
def test_bad_inputs_raise_input_error(bad, match):
    with pytest.raises(tw.InputError, match=match):
        tw.encode(bad)


def test_duplicate_names_from_nesting_are_refused():
    with pytest.raises(tw.InputError, match="appears twice"):
        tw.encode({"a/b": np.zeros(1), "a": {"b": np.zeros(1)}})


class ArrayLike:
    """Stands in for a torch CPU tensor or a jax array: only __array__."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a


class DLPackOnly:
    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_array_protocol_and_dlpack_inputs():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = tw.decode(tw.encode({"t": ArrayLike(a), "d": DLPackOnly(a)}))
    assert same(out["t"], a) and same(out["d"], a)


def test_reader_api():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = tw.encode({"a": a, "b": np.int8(3)}, metadata={"k": 1})
    with tw.open(blob) as r:
        assert r.keys() == ["a", "b"] and len(r) == 2 and "a" in r and "z" not in r
        assert list(r) == ["a", "b"]
        info = r.info("a")
        assert (info.dtype, info.shape, info.codec, info.stored_bytes, info.nbytes) == (
            "float32", (2, 3), "raw", 24, 24,
        )  # fmt: skip
        assert same(r["a"], a) and r["b"].shape == ()
        assert r.version == tw.FORMAT_VERSION
        r.verify()
        with pytest.raises(KeyError, match="no tensor named 'z'"):
            r["z"]
    assert "Reader 2 tensors" in repr(tw.open(blob))


def test_content_id_is_deterministic_and_content_sensitive():
    a = np.arange(6, dtype=np.float32)
    assert tw.open(tw.encode({"a": a})).content_id == tw.open(tw.encode({"a": a.copy()})).content_id
    b = a.copy()
    b[0] = -1
    assert tw.open(tw.encode({"a": a})).content_id != tw.open(tw.encode({"a": b})).content_id
    assert len(tw.open(tw.encode({"a": a})).content_id) == 64


def test_spec_reader_decodes_what_the_library_writes():
    tensors = {
        "w": np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32),
        "i": np.arange(-3, 3, dtype=np.int64),
        "m": np.array([True, False]),
        "c": np.array([1 + 2j], np.complex128),
        "s": np.float16(1.5),
        "e": np.zeros((0, 3), np.uint32),
    }
    got, meta = spec_reader.read(tw.encode(tensors, metadata=[1, "x"]))
    assert meta == [1, "x"]
    assert list(got) == list(tensors)
    for k in tensors:
        assert same(got[k], np.asarray(tensors[k]))
    nested = [tensors["w"], {"x": (tensors["i"],)}]
    got, _ = spec_reader.read(tw.encode(nested))
    assert_tree_equal(got, nested)


def test_library_reads_what_the_spec_writer_writes():
    a = np.arange(10, dtype=np.int32).tobytes()
    b = np.ones(3, np.float64).tobytes()
    header = {
        "tensors": [
            spec_reader.entry("a", "int32", [2, 5], a, 0),
            spec_reader.entry("b", "float64", [3], b, 64),
        ],
        "structure": {"list": [1, {"dict": [["k", 0]]}]},
        "metadata": {"from": "spec"},
    }
    payload = spec_reader.write(header, a + bytes(64 - len(a)) + b)
    out = tw.decode(payload)
    assert same(out[0], np.ones(3)) and same(
        out[1]["k"], np.arange(10, dtype=np.int32).reshape(2, 5)
    )


def test_save_and_load_mmap(tmp_path):
    a = np.random.default_rng(1).standard_normal((64, 33)).astype(np.float32)
    path = tmp_path / "m.tw"
    tw.save({"a": a, "n": [a[:2]]}, path, metadata={"v": 1})
    assert not [p for p in os.listdir(tmp_path) if p != "m.tw"], "no temporary file left"
    out = tw.load(path)
    assert same(out["a"], a) and same(out["n"][0], a[:2])
    assert not out["a"].flags.writeable
    assert tw.open(path).metadata == {"v": 1}
    assert path.read_bytes() == tw.encode({"a": a, "n": [a[:2]]}, metadata={"v": 1})
    assert same(tw.load(str(path), copy=True)["a"], a)


def test_save_is_atomic_on_failure(tmp_path):
    path = tmp_path / "m.tw"
    tw.save({"a": np.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(tw.InputError):
        tw.save({"a": np.array([object()])}, path)
    with pytest.raises(tw.CodecError):
        tw.save({"a": np.ones(3)}, path, codec="nope")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.tw"]


def test_save_into_missing_directory_is_a_tensorwire_error(tmp_path):
    with pytest.raises(tw.TensorwireError, match="creating"):
        tw.save({"a": np.ones(3)}, tmp_path / "nope" / "m.tw")


def test_load_of_empty_or_missing_file(tmp_path):
    (tmp_path / "e.tw").write_bytes(b"")
    with pytest.raises(tw.FormatError, match="empty"):
        tw.load(tmp_path / "e.tw")
    with pytest.raises(FileNotFoundError):
        tw.load(tmp_path / "missing.tw")


def test_codec_selection_by_glob_and_callable():
    t = {"enc.weight": np.ones((8, 8), np.float32), "enc.bias": np.ones(8, np.float32)}
    r = tw.open(tw.encode(t, codec={"*.bias": "raw", "*": "zstd"}))
    assert r.info("enc.bias").codec == "raw" and r.info("enc.weight").codec == "zstd:3"
    r = tw.open(tw.encode(t, codec=lambda name, a: "lz4" if a.ndim == 2 else "raw"))
    assert r.info("enc.weight").codec == "lz4" and r.info("enc.bias").codec == "raw"
    with pytest.raises(tw.InputError, match="not str"):
        tw.encode(t, codec=lambda name, a: 3)
    with pytest.raises(tw.CodecError, match='"enc.weight".*unknown codec stage'):
        tw.encode(t, codec={"*.weight": "gzip"})


def test_offsets_beyond_4_gib():
    big = np.zeros((1 << 32) + 100, dtype=np.uint8)  # calloc'd: costs no memory to read
    tail = np.arange(10, dtype=np.int16)
    blob = tw.encode({"big": big, "tail": tail})
    r = tw.open(blob)
    assert r.info("big").nbytes == (1 << 32) + 100
    assert same(r.get("tail", verify=True), tail)
    assert r["big"].shape == big.shape and r["big"][-1] == 0
    del blob, r


def test_subclasses_and_layouts_that_need_normalising_mix_in_one_payload(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    mm = np.memmap(tmp_path / "m.bin", dtype=np.float32, mode="w+", shape=(4, 6))
    mm[:] = a
    tensors = {
        "memmap": mm,  # an ndarray subclass: read in place
        "strided": a[:, ::2],  # the rest go through the Python layer's normaliser
        "fortran": np.asfortranarray(a),
        "big_endian": a.astype(">f4"),
        "plain": a,
        "scalar": np.float64(2.5),
    }
    out = tw.decode(tw.encode(tensors))
    for k, v in tensors.items():
        want = np.asarray(v)
        assert out[k].dtype == want.dtype.newbyteorder("<") and np.array_equal(out[k], want), k


def test_closed_reader_raises_closed_error(tmp_path):
    r = tw.open(tw.encode({"w": np.ones(3, np.float32)}))
    r.close()
    assert repr(r) == "<tensorwire.Reader closed>" and r.closed
    for call in (r.keys, lambda: len(r), lambda: r["w"], lambda: r.info("w"),
                 lambda: r.metadata, lambda: r.content_id, r.verify, r.tensors):  # fmt: skip
        with pytest.raises(errors.ClosedError, match="closed"):
            call()
    assert issubclass(errors.ClosedError, ValueError)
    r.close()  # twice is fine, as for files


def test_files_others_may_change(tmp_path):
    import os

    path = tmp_path / "m.tw"
    tw.save({"w": np.arange(1 << 16, dtype=np.float32)}, path)
    # mmap=False: a private, verified copy; truncating or rewriting the file cannot touch it.
    out = tw.load(path, mmap=False)
    with open(path, "r+b") as f:
        f.truncate(100)
    assert out["w"][-1] == (1 << 16) - 1
    # Anything but a regular file is refused, without blocking on a FIFO.
    os.mkfifo(tmp_path / "pipe.tw")
    with pytest.raises(tw.FormatError, match="not a regular file"):
        tw.load(tmp_path / "pipe.tw")
    with pytest.raises(tw.FormatError, match="not a regular file"):
        tw.load(tmp_path)


def test_writable_buffers_are_copied_so_what_is_verified_is_returned():
    blob = bytearray(tw.encode({"w": np.arange(100, dtype=np.float32)}))
    out = tw.decode(blob)
    blob[-1] ^= 0xFF  # the caller changes its buffer afterwards
    assert out["w"][-1] == 99.0
    assert not np.shares_memory(out["w"], np.frombuffer(blob, np.uint8))
    ro = bytes(blob)
    assert tw.decode(ro, verify=False)["w"].base is not None  # read-only: still zero-copy


def test_decode_budget():
    sparse = tw.encode({"w": np.zeros(1 << 20, np.float32)}, codec="topk:0.01+zstd")
    with pytest.raises(tw.FormatError, match="max_decoded_bytes=1000"):
        tw.decode(sparse, max_decoded_bytes=1000)
    assert tw.decode(sparse, max_decoded_bytes=4 << 20)["w"].shape == (1 << 20,)
    with pytest.raises(tw.FormatError, match="max_decoded_bytes"):
        tw.open(sparse, max_decoded_bytes=10)["w"]


def test_the_dtype_table_comes_from_rust_and_matches_numpy():
    from tensorwire import _arrays, _core

    names = [name for name, _, _ in _core.DTYPES]
    assert len(names) == len(set(names)) == 17
    for name, itemsize, typestr in _core.DTYPES:
        dt = _arrays.NUMPY_DTYPES[name]  # ml_dtypes is a dev requirement
        assert dt.name == name and dt.itemsize == itemsize
        assert (typestr is None) == (name in _arrays.ML_DTYPES)
        if typestr is not None:
            assert dt == np.dtype(typestr) and dt.byteorder in "=|<"
        a = np.zeros(3, dt)
        assert tw.decode(tw.encode({"x": a}))["x"].dtype == dt
    assert _arrays.SUPPORTED == frozenset(names)
    # Leaves the Rust layer cannot borrow as they are: the Python layer normalises them.
    leaves = [np.zeros(3, "<f4"), np.zeros(3, ">f4"), np.zeros((3, 3))[:, 0], 1.5, [1]]
    assert _core.not_stored(leaves) == [1, 2, 3, 4]


def _padded_payload():
    """A payload of three tensors with zero padding after the first, and the padding's
    offset."""
    blob = bytearray(
        tw.encode(
            {
                "a": np.arange(5, dtype=np.float32),
                "b": np.ones(300, np.float32),
                "c": np.arange(40.0),
            },
            codec={"a": "raw", "b": "zstd", "c": "raw"},
        )
    )
    entries = _core.Payload(bytes(blob), None, None, None).entries()
    (_, _, _, _, start, length, *_), second = entries[0], entries[1]
    assert start + length < second[4]  # there is padding between a and b
    return blob, start + length, [e[5] for e in entries]


def test_reader_verify_with_progress_checks_what_verify_checks(monkeypatch):
    blob, padding, stored = _padded_payload()
    for part, want in [(1, stored), (1 << 30, [sum(stored)])]:
        monkeypatch.setattr(_container, "_VERIFY_PART_BYTES", part)
        got = []
        with tw.open(bytes(blob)) as r:
            r.verify(progress=got.append)
        assert got == want  # real bytes: one call per part, adding up to all of them
        bad = bytearray(blob)
        bad[padding] = 1  # non-zero padding: refused by both
        with tw.open(bytes(bad)) as r:
            with pytest.raises(tw.IntegrityError, match="padding"):
                r.verify()
            with pytest.raises(tw.IntegrityError, match="padding"):
                r.verify(progress=got.append)
        bad = bytearray(blob)
        bad[-5] ^= 1  # the last tensor: refused, after the parts before it were reported
        got = []
        with tw.open(bytes(bad)) as r:
            with pytest.raises(tw.IntegrityError, match='"c"'):
                r.verify(progress=got.append)
        assert got == want[:-1]
