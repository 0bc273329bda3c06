"""tensorwire.formats: exact round trips, interop with the real peer libraries and the
seeds' own code, and hostile input."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorwire as tw
from tensorwire.formats import md5list, npz, ptth, safetensors

RNG = np.random.default_rng(1234)

ALL_DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
    ml_dtypes.bfloat16,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
]
SAFETENSORS_DTYPES = [d for d in ALL_DTYPES if d is not np.complex128]
NPZ_DTYPES = [d for d in ALL_DTYPES if d.__module__ == "numpy"]
PTTH_DTYPES = [np.float32, np.float64, np.int32]


def random_array(dtype, shape):
    """Random bytes reinterpreted as ``dtype`` (NaNs and all: byte-exactness is the test)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = RNG.integers(0, 256, size=n, dtype=np.uint8)
    if dt.kind == "b":
        raw = raw & 1
    return raw.view(dt).reshape(shape)


def named_set(dtypes):
    shapes = [(3, 5), (7,), (), (0, 4), (2, 1, 3)]
    return {
        f"layer{i}.{np.dtype(dt).name}": random_array(dt, shapes[i % len(shapes)])
        for i, dt in enumerate(dtypes)
    }


def same_bytes(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )


def assert_same(got, want):
    if isinstance(want, dict):
        assert sorted(got) == sorted(want)
        for k in want:
            assert same_bytes(got[k], want[k]), k
    else:
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert same_bytes(g, w)


def assert_rejected(fn, data):
    """``fn(data)`` either raises a tensorwire error or (never) anything else."""
    with pytest.raises((tw.FormatError, tw.IntegrityError)):
        fn(data)


# --------------------------------------------------------------------------------------
# Reference implementations, copied from the seeds' text (shared/seeds/).


def seed_serialize_weights(weights):
    """kafka-fl-serialization.md: serialize_weights, minus the logging."""
    buffer = io.BytesIO()
    buffer.write(np.array([len(weights)], dtype=np.int32).tobytes())
    for w in weights:
        buffer.write(np.array([len(w.shape)], dtype=np.int32).tobytes())
        buffer.write(np.array(w.shape, dtype=np.int32).tobytes())
        dtype_str = str(w.dtype)
        buffer.write(np.array([len(dtype_str)], dtype=np.int32).tobytes())
        buffer.write(dtype_str.encode("utf-8"))
        buffer.write(w.tobytes())
    serialized_data = buffer.getvalue()
    checksum = hashlib.md5(serialized_data).digest()
    return serialized_data + checksum


def seed_deserialize_weights(serialized_data):
    """kafka-fl-serialization.md: deserialize_weights, minus the logging."""
    data = serialized_data[:-16]
    received_checksum = serialized_data[-16:]
    calculated_checksum = hashlib.md5(data).digest()
    if calculated_checksum != received_checksum:
        return None
    buffer = io.BytesIO(data)
    num_arrays = np.frombuffer(buffer.read(4), dtype=np.int32)[0]
    weights = []
    for _ in range(num_arrays):
        ndim = np.frombuffer(buffer.read(4), dtype=np.int32)[0]
        shape = tuple(np.frombuffer(buffer.read(4 * ndim), dtype=np.int32))
        dtype_len = np.frombuffer(buffer.read(4), dtype=np.int32)[0]
        dtype_str = buffer.read(dtype_len).decode("utf-8")
        dtype = np.dtype(dtype_str)
        num_bytes = np.prod(shape) * dtype.itemsize
        array_data = np.frombuffer(buffer.read(num_bytes), dtype=dtype).reshape(shape)
        weights.append(array_data)
    return weights


def seed_deserialize_ios_weights(data):
    """coreml-ptth-weights.md: deserialize_ios_weights, returning numpy instead of torch.

    As in the seed, the data is read as native float32 whatever the dtype code says.
    """
    offset = 0
    magic, _version, param_count = struct.unpack(">III", data[offset : offset + 12])
    offset += 12
    if magic != 0x50545448:
        raise ValueError("Invalid magic number")
    weights = {}
    for _ in range(param_count):
        (name_len,) = struct.unpack(">I", data[offset : offset + 4])
        offset += 4
        name = data[offset : offset + name_len].decode("utf-8")
        offset += name_len
        (shape_count,) = struct.unpack(">I", data[offset : offset + 4])
        offset += 4
        shape = struct.unpack(f">{shape_count}I", data[offset : offset + shape_count * 4])
        offset += shape_count * 4
        (_dtype,) = struct.unpack(">I", data[offset : offset + 4])
        offset += 4
        (data_len,) = struct.unpack(">I", data[offset : offset + 4])
        offset += 4
        tensor_data = data[offset : offset + data_len]
        offset += data_len
        weights[name] = np.frombuffer(tensor_data, dtype=np.float32).reshape(shape)
    return weights


def spec_serialize_ptth(params):
    """The seed's "Serialization Format" table, written independently: big-endian uint32
    header fields, dtype codes 0=float32 1=float64 2=int32, raw little-endian data."""
    codes = {"float32": 0, "float64": 1, "int32": 2}
    out = struct.pack(">III", 0x50545448, 1, len(params))
    for name, a in params.items():
        raw_name = name.encode("utf-8")
        out += struct.pack(">I", len(raw_name)) + raw_name
        out += struct.pack(">I", a.ndim) + b"".join(struct.pack(">I", d) for d in a.shape)
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        out += struct.pack(">II", codes[a.dtype.name], len(data)) + data
    return out


# --------------------------------------------------------------------------------------
# safetensors


def test_safetensors_round_trip_every_dtype():
    tensors = named_set(SAFETENSORS_DTYPES)
    blob = safetensors.dumps(tensors, metadata={"step": "3", "note": "é"})
    back = safetensors.loads(blob)
    assert_same(back, tensors)
    assert safetensors.metadata(blob) == {"step": "3", "note": "é"}
    # byte-exact both ways: re-encoding what we read gives the same bytes
    assert safetensors.dumps(back, metadata=safetensors.metadata(blob)) == blob


def test_safetensors_writes_exactly_what_the_reference_writes():
    import safetensors.numpy as reference

    tensors = named_set(SAFETENSORS_DTYPES)
    assert safetensors.dumps(tensors) == reference.save(tensors)
    # one metadata key: the reference orders several keys at random (a Rust HashMap)
    meta = {"format": "np"}
    assert safetensors.dumps(tensors, metadata=meta) == reference.save(tensors, metadata=meta)


def test_safetensors_reads_reference_files_and_reference_reads_ours(tmp_path):
    import safetensors.numpy as reference
    from safetensors import safe_open

    tensors = named_set(SAFETENSORS_DTYPES)
    path = tmp_path / "ref.safetensors"
    reference.save_file(tensors, str(path), metadata={"k": "v"})
    assert_same(safetensors.load(path), tensors)
    assert safetensors.metadata(path.read_bytes()) == {"k": "v"}

    # the reference numpy loader knows no bfloat16/float8: check those via safe_open's header
    plain = {k: v for k, v in tensors.items() if "float8" not in k and "bfloat16" not in k}
    ours = tmp_path / "ours.safetensors"
    safetensors.dump(tensors, ours, metadata={"who": "tensorwire"})
    assert_same(reference.load(safetensors.dumps(plain)), plain)
    with safe_open(str(ours), framework="numpy") as f:
        assert f.metadata() == {"who": "tensorwire"}
        assert sorted(f.keys()) == sorted(tensors)
        for k in plain:
            assert same_bytes(f.get_tensor(k), tensors[k])


def test_safetensors_loads_zero_copy_read_only_views():
    tensors = {"w": random_array(np.float32, (64, 64)), "b": random_array(np.float64, (64,))}
    blob = safetensors.dumps(tensors)
    back = safetensors.loads(blob)
    for a in back.values():
        assert not a.flags.writeable
        assert not a.flags.owndata and a.flags.aligned
        assert np.shares_memory(a, np.frombuffer(blob, np.uint8))
    with pytest.raises(ValueError):
        back["w"][0, 0] = 1.0


def test_safetensors_misaligned_input_comes_back_aligned():
    # a hand-made file whose header is not padded: f64 data starts at an odd offset
    header = json.dumps({"x": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}}).encode()
    header += b" "  # odd length on purpose
    blob = len(header).to_bytes(8, "little") + header + np.arange(2.0).tobytes()
    (x,) = safetensors.loads(blob).values()
    assert x.flags.aligned and list(x) == [0.0, 1.0]


def test_safetensors_refuses_what_it_cannot_write():
    with pytest.raises(tw.InputError, match="complex128"):
        safetensors.dumps({"z": np.zeros(2, np.complex128)})
    with pytest.raises(tw.InputError, match="__metadata__"):
        safetensors.dumps({"__metadata__": np.zeros(2)})
    with pytest.raises(tw.InputError, match="str to str"):
        safetensors.dumps({"a": np.zeros(2)}, metadata={"n": 1})


def _st(header, data=b""):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "too short"),
        ((10**9).to_bytes(8, "little"), "exceeds the limit"),
        ((100).to_bytes(8, "little") + b"{}", "runs past"),
        (_st(b"[1,2]"), "not an object"),
        (_st(b"{bad json"), "not valid JSON"),
        (_st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":1}', b"\0" * 4), "twice"),
        (_st(b"\xff\xfe"), "not valid JSON"),
        (_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "span 4"),
        (_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 4), "outside"),
        (_st({"a": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "dtype"),
        (_st({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "dim"),
        (_st({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
        (_st({"a": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}), "absurd"),
        (_st({"a": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, b"\0" * 4), "65"),
        (_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, b"\0" * 4), "offsets"),
        (_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8), "cover"),
        (
            _st(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]},
                },
                b"\0" * 8,
            ),
            "overlaps",
        ),
        (_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "gap"),
        (_st({"__metadata__": {"a": 1}}), "strings"),
        (_st({"a": [1]}), "non-object"),
    ],
)
def test_safetensors_hostile_headers(blob, match):
    with pytest.raises(tw.FormatError, match=match):
        safetensors.loads(blob)


# --------------------------------------------------------------------------------------
# npz


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_round_trip_and_numpy_reads_ours(compressed):
    tensors = named_set(NPZ_DTYPES)
    blob = npz.dumps(tensors, compressed=compressed)
    assert_same(npz.loads(blob), tensors)
    with np.load(io.BytesIO(blob), allow_pickle=False) as f:
        assert_same(dict(f), tensors)
    # deterministic: same tensors, same bytes
    assert npz.dumps(npz.loads(blob), compressed=compressed) == blob
    kinds = {i.compress_type for i in zipfile.ZipFile(io.BytesIO(blob)).infolist()}
    assert kinds == {zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED}
    sizes = npz.stored(blob)
    assert list(sizes) == list(tensors)
    assert {m for m, _ in sizes.values()} == {"deflate" if compressed else "stored"}
    assert sum(n for _, n in sizes.values()) < len(blob)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_reads_numpy_files(save, tmp_path):
    tensors = named_set(NPZ_DTYPES)
    tensors["fortran"] = np.asfortranarray(random_array(np.float32, (3, 4)))
    tensors["big_endian"] = random_array(np.dtype(">i4"), (5,))
    path = tmp_path / "x.npz"
    save(path, **tensors)
    back = npz.load(path)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert back[k].tobytes() == v.tobytes()
    assert back["fortran"].flags.f_contiguous
    assert_same(npz.loads(path.read_bytes()), npz.load(path))


def test_npz_refuses_pickles_and_void():
    buf = io.BytesIO()
    np.savez(buf, ok=np.arange(3), evil=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(tw.FormatError, match="pickle"):
        npz.loads(buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, v=np.zeros(2, ml_dtypes.bfloat16))  # numpy writes it as '<V2'
    with pytest.raises(tw.FormatError, match="unsupported dtype"):
        npz.loads(buf.getvalue())
    with pytest.raises(tw.InputError, match="bfloat16"):
        npz.dumps({"b": np.zeros(2, ml_dtypes.bfloat16)})
    with pytest.raises(tw.InputError):
        npz.dumps({"o": np.array(["a"], dtype=object)})


def _zip(members, method=zipfile.ZIP_STORED):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _npy(descr, shape, data=b"", fortran=False):
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


@pytest.mark.parametrize(
    ("blob", "error", "match"),
    [
        (b"", tw.FormatError, "zip"),
        (b"PK\x03\x04garbage", tw.FormatError, "zip"),
        (_zip({"a.txt": b"hello"}), tw.FormatError, "not a .npy"),
        (_zip({"a.npy": b"not npy"}), tw.FormatError, "malformed"),
        (_zip({"a.npy": _npy("<f4", (10**12,))}), tw.FormatError, "holds"),
        (_zip({"a.npy": _npy("<f4", (2**40, 2**40))}), tw.FormatError, "absurd"),
        (_zip({"a.npy": _npy("<f4", (2,), b"\0" * 12)}), tw.FormatError, "holds"),
        (_zip({"a.npy": _npy("|O", (1,), b"\0" * 8)}), tw.FormatError, "pickle"),
        (_zip({"a.npy": _npy("<U3", (1,), b"\0" * 12)}), tw.FormatError, "dtype"),
        (_zip({"a.npy": _npy([("x", "<f4")], (1,), b"\0" * 4)}), tw.FormatError, "dtype"),
        (
            _zip({"a.npy": _npy("<f4", (4,), b"\0" * 16)}, zipfile.ZIP_BZIP2),
            tw.FormatError,
            "compression method",
        ),
    ],
)
def test_npz_hostile_archives(blob, error, match):
    with pytest.raises(error, match=match):
        npz.loads(blob)


def test_npz_lying_sizes_and_crc():
    good = npz.dumps({"a": np.arange(64, dtype=np.float32)})
    # flip a data byte: the CRC catches it
    bad = bytearray(good)
    bad[good.index(b"\x00\x00\x80\x3f")] ^= 1
    with pytest.raises(tw.IntegrityError, match="CRC"):
        npz.loads(bytes(bad))
    # a deflated member claiming a file size beyond deflate's expansion limit
    blob = bytearray(_zip({"a.npy": _npy("<f4", (64,), b"\0" * 256)}, zipfile.ZIP_DEFLATED))
    cd = blob.rindex(b"PK\x01\x02")
    (compressed,) = struct.unpack_from("<I", blob, cd + 20)
    struct.pack_into("<I", blob, cd + 24, compressed * 5000)
    with pytest.raises(tw.FormatError, match="claims"):
        npz.loads(bytes(blob))


def test_npz_overlapping_members_refused():
    # a "better zip bomb": two central-directory entries share one compressed stream
    noise = random_array(np.uint8, (4096,)).tobytes()
    blob = bytearray(_zip({"a.npy": _npy("<u1", (4096,), noise)}, zipfile.ZIP_DEFLATED))
    cd = blob.rindex(b"PK\x01\x02")
    eocd = blob.rindex(b"PK\x05\x06")
    entry = bytes(blob[cd:eocd]).replace(b"a.npy", b"b.npy")
    blob[eocd:eocd] = entry
    eocd += len(entry)
    struct.pack_into("<HHI", blob, eocd + 8, 2, 2, eocd - cd)
    with pytest.raises(tw.FormatError, match="stored bytes"):
        npz.loads(bytes(blob))


# --------------------------------------------------------------------------------------
# md5list (the Kafka seed)

MD5LIST_DTYPES = [d for d in ALL_DTYPES]


def test_md5list_matches_the_seed_both_ways():
    # no 0-d arrays here: the seed's reader cannot read them (np.prod(()) is the float 1.0)
    weights = [a for a in named_set(MD5LIST_DTYPES).values() if a.ndim]
    blob = md5list.dumps(weights)
    assert blob == seed_serialize_weights(weights)
    assert_same(seed_deserialize_weights(blob), weights)
    assert_same(md5list.loads(seed_serialize_weights(weights)), weights)
    assert md5list.dumps(md5list.loads(blob)) == blob


def test_md5list_reads_big_endian_arrays_the_seed_wrote():
    weights = [np.arange(6, dtype=">f8").reshape(2, 3), np.arange(3, dtype=">i2")]
    back = md5list.loads(seed_serialize_weights(weights))
    for g, w in zip(back, weights):
        assert g.dtype == w.dtype and np.array_equal(g, w)


def test_md5list_writes_0d_arrays_the_seed_way():
    weights = [np.float32(3.5), np.array(7, np.int64)]
    blob = md5list.dumps(weights)
    assert blob == seed_serialize_weights([np.asarray(w) for w in weights])
    assert_same(md5list.loads(blob), [np.asarray(w) for w in weights])


def test_md5list_takes_mappings_in_order_and_returns_a_list(tmp_path):
    d = {"b": np.ones(2), "a": np.zeros(3, np.int8)}
    back = md5list.loads(md5list.dumps(d))
    assert isinstance(back, list)
    assert_same(back, list(d.values()))
    md5list.dump(d, tmp_path / "w.md5list")
    assert_same(md5list.load(tmp_path / "w.md5list"), list(d.values()))


def _md5(body):
    return body + hashlib.md5(body).digest()


def _entry(dtype_str, shape, data):
    raw = dtype_str.encode() if isinstance(dtype_str, str) else dtype_str
    return (
        struct.pack(f"<i{len(shape)}i", len(shape), *shape)
        + struct.pack("<i", len(raw))
        + raw
        + data
    )


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (struct.pack("<i", -1), "count"),
        (struct.pack("<i", 2**31 - 1), "count"),
        (struct.pack("<i", 1) + _entry("object", (1,), b"\0" * 8), "unsupported dtype"),
        (struct.pack("<i", 1) + _entry("|O", (1,), b"\0" * 8), "unsupported dtype"),
        (struct.pack("<i", 1) + _entry("<U4", (1,), b"\0" * 16), "unsupported dtype"),
        (struct.pack("<i", 1) + _entry("V8", (1,), b"\0" * 8), "unsupported dtype"),
        (struct.pack("<i", 1) + _entry(b"\xff\xfe", (1,), b"\0" * 8), "unsupported dtype"),
        (struct.pack("<i", 1) + _entry("float32", (-1,), b""), "invalid dimension"),
        (struct.pack("<i", 1) + _entry("float32", (2**30, 2**30), b""), "needs"),
        (
            struct.pack("<i", 1) + _entry("float32", (0, 2**31 - 1, 2**31 - 1, 2**31 - 1), b""),
            "absurd",
        ),
        (struct.pack("<i", 1) + _entry("float32", (3,), b"\0" * 8), "needs 12 bytes"),
        (struct.pack("<i", 1) + _entry("float32", (1,), b"\0" * 8), "left over"),
        (struct.pack("<ii", 1, 2**31 - 1) + b"\0" * 16, "ndim"),
        (struct.pack("<ii", 1, -5) + b"\0" * 16, "ndim"),
        (struct.pack("<iiii", 1, 1, 4, 2**31 - 1) + b"\0" * 16, "dtype string of length"),
        (struct.pack("<iiii", 1, 1, 4, 0) + b"\0" * 16, "dtype string of length"),
    ],
)
def test_md5list_hostile_bodies_with_valid_md5(body, match):
    with pytest.raises(tw.FormatError, match=match):
        md5list.loads(_md5(body))


def test_md5list_bad_md5_is_an_integrity_error():
    blob = bytearray(md5list.dumps([np.arange(10.0)]))
    blob[20] ^= 0x40
    with pytest.raises(tw.IntegrityError, match="MD5"):
        md5list.loads(bytes(blob))
    assert seed_deserialize_weights(bytes(blob)) is None  # the seed agrees


# --------------------------------------------------------------------------------------
# ptth (the iOS seed)


def test_ptth_matches_the_seed_layout_both_ways():
    params = named_set(PTTH_DTYPES * 3)
    blob = ptth.dumps(params)
    assert blob == spec_serialize_ptth(params)
    assert_same(ptth.loads(spec_serialize_ptth(params)), params)
    assert ptth.dumps(ptth.loads(blob)) == blob
    # header fields big-endian, data little-endian
    assert blob[:12] == b"PTTH\x00\x00\x00\x01" + struct.pack(">I", len(params))
    one = ptth.dumps({"x": np.array([1.0], np.float32)})
    assert one.endswith(b"\x00\x00\x80\x3f")


def test_ptth_seed_server_reads_our_float32():
    params = {"conv.weight": random_array(np.float32, (4, 3)), "fc.bias": np.arange(5, dtype="f4")}
    got = seed_deserialize_ios_weights(ptth.dumps(params))
    assert_same(got, params)


def test_ptth_refuses_other_dtypes_clearly(tmp_path):
    for dt in [np.float16, np.int64, ml_dtypes.bfloat16, np.uint8, np.bool_]:
        with pytest.raises(tw.InputError, match=r"'w'.*float32, float64 and int32"):
            ptth.dumps({"w": np.zeros(2, dt)})
    ptth.dump({"a": np.ones(3, np.int32)}, tmp_path / "m.ptth")
    assert_same(ptth.load(tmp_path / "m.ptth"), {"a": np.ones(3, np.int32)})


def _ptth(count, *params, magic=0x50545448, version=1):
    return struct.pack(">III", magic, version, count) + b"".join(params)


def _param(name, shape, code, data_len, data=b""):
    raw = name.encode() if isinstance(name, str) else name
    return (
        struct.pack(">I", len(raw))
        + raw
        + struct.pack(f">I{len(shape)}III", len(shape), *shape, code, data_len)
        + data
    )


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"PTT", "needs 12 bytes"),
        (_ptth(0, magic=0x12345678), "bad magic"),
        (_ptth(0, version=2), "version 2"),
        (_ptth(2**32 - 1), "count"),
        (_ptth(1, _param("a", (1,), 7, 4, b"\0" * 4)), "dtype code 7"),
        (_ptth(1, _param("a", (2,), 0, 4, b"\0" * 4)), "declares 4"),
        (_ptth(1, _param("a", (2**20, 2**20), 0, 0)), "declares 0"),
        (_ptth(1, _param("a", (2**31, 2**31), 0, 0)), "absurd"),
        (_ptth(1, _param("a", (0, 2**32 - 1, 2**32 - 1), 1, 0)), "absurd"),
        (_ptth(1, _param("a", (1,), 0, 4, b"\0" * 2)), "needs 4 bytes"),
        (_ptth(1, _param("a", (1,), 0, 4, b"\0" * 6)), "left over"),
        (_ptth(1, _param(b"\xff", (1,), 0, 4, b"\0" * 4)), "UTF-8"),
        (_ptth(2, _param("a", (), 2, 4, b"\0" * 4), _param("a", (), 2, 4, b"\0" * 4)), "twice"),
        (_ptth(1, struct.pack(">I", 2**32 - 1) + b"x" * 16), "name"),
        (_ptth(1, struct.pack(">I", 1) + b"a" + struct.pack(">I", 10**6) + b"\0" * 16), "rank"),
    ],
)
def test_ptth_hostile(blob, match):
    with pytest.raises(tw.FormatError, match=match):
        ptth.loads(blob)


# --------------------------------------------------------------------------------------
# every format: truncation at every offset and byte flips never crash or mislead


def _small_blobs():
    t = {"w": random_array(np.float32, (2, 3)), "b": random_array(np.int32, (2,))}
    return [
        ("safetensors", safetensors.loads, safetensors.dumps(t, metadata={"m": "x"})),
        ("npz", npz.loads, npz.dumps(t)),
        ("npz-deflate", npz.loads, npz.dumps(t, compressed=True)),
        ("md5list", md5list.loads, md5list.dumps(list(t.values()))),
        ("ptth", ptth.loads, ptth.dumps(t)),
    ]


@pytest.mark.parametrize(("name", "loads", "blob"), _small_blobs(), ids=lambda x: str(x)[:12])
def test_every_truncation_is_refused(name, loads, blob):
    for n in range(len(blob)):
        assert_rejected(loads, blob[:n])


@pytest.mark.parametrize(("name", "loads", "blob"), _small_blobs(), ids=lambda x: str(x)[:12])
def test_byte_flips_are_refused_or_read_within_bounds(name, loads, blob):
    rng = np.random.default_rng(7)
    for _ in range(300):
        bad = bytearray(blob)
        for i in rng.integers(0, len(bad), size=rng.integers(1, 4)):
            bad[i] ^= 1 << int(rng.integers(0, 8))
        try:
            out = loads(bytes(bad))
        except (tw.FormatError, tw.IntegrityError):
            continue
        arrays = out.values() if isinstance(out, dict) else out
        assert sum(a.nbytes for a in arrays) <= len(bad)


def test_loaders_accept_every_bytes_like_type():
    t = {"w": random_array(np.float32, (4,))}
    for mod in (safetensors, npz, ptth):
        blob = mod.dumps(t)
        for source in (blob, bytearray(blob), memoryview(blob), np.frombuffer(blob, np.uint8)):
            assert_same(mod.loads(source), t)
    with pytest.raises(tw.InputError, match="bytes-like"):
        ptth.loads("not bytes")


def test_formats_subpackage_is_lazy_and_complete():
    import tensorwire.formats as formats

    assert set(formats.__all__) >= {"safetensors", "npz", "md5list", "ptth"}
    assert formats.ptth is ptth
    with pytest.raises(AttributeError):
        _ = formats.nope


# --------------------------------------------------------------------------------------
# property: any list of arrays round-trips byte-exactly through every format that can hold it

_ARRAYS = st.lists(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype(d) for d in (np.float32, np.float64, np.int32)]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(_ARRAYS)
def test_property_round_trip_every_format(arrays):
    named = {f"t{i}": a for i, a in enumerate(arrays)}
    assert_same(md5list.loads(md5list.dumps(arrays)), arrays)
    assert_same(ptth.loads(ptth.dumps(named)), named)
    assert_same(safetensors.loads(safetensors.dumps(named)), named)
    assert_same(npz.loads(npz.dumps(named, compressed=True)), named)
    if all(a.ndim for a in arrays):  # the seed's reader cannot read 0-d arrays
        assert_same(seed_deserialize_weights(md5list.dumps(arrays)), arrays)


# --------------------------------------------------------------------------------------
# hostile field types and sizes: every value a header holds is checked for its exact
# type and range before use, and JSON itself can only fail as a FormatError

_BIG = "9" * 5000  # past Python's 4,300-digit int conversion limit


def _st_text(text, data=b""):
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return len(raw).to_bytes(8, "little") + raw + data


def _entry_json(dtype='"F32"', shape="[1]", offsets="[0, 4]"):
    return f'{{"x": {{"dtype": {dtype}, "shape": {shape}, "data_offsets": {offsets}}}}}'


@pytest.mark.parametrize(
    ("dtype", "shape", "offsets", "match"),
    [
        ("[2, 3]", "[1]", "[0, 4]", r"tensor 'x' has an unsupported dtype \[2, 3\]"),
        ('{"F32": 1}', "[1]", "[0, 4]", "tensor 'x' has an unsupported dtype"),
        ("7", "[1]", "[0, 4]", "tensor 'x' has an unsupported dtype 7"),
        ("true", "[1]", "[0, 4]", "tensor 'x' has an unsupported dtype True"),
        ("null", "[1]", "[0, 4]", "tensor 'x' has an unsupported dtype None"),
        ('"f32"', "[1]", "[0, 4]", "tensor 'x' has an unsupported dtype 'f32'"),
        ('"F32"', f"[{_BIG}]", "[0, 4]", "tensor 'x' has an invalid shape .*5000 digits"),
        ('"F32"', f"[-{_BIG}]", "[0, 4]", "tensor 'x' has an invalid shape .*5000 digits"),
        ('"F32"', "[1]", f"[0, {_BIG}]", "tensor 'x' has an invalid data_offsets .*5000 digits"),
        ('"F32"', "[1]", f"[{_BIG}, 4]", "tensor 'x' has an invalid data_offsets"),
        ('"F32"', "[1" + "0" * 20 + "]", "[0, 4]", "tensor 'x' has an invalid shape .*21 digits"),
        ('"F32"', "[true]", "[0, 4]", "tensor 'x' has an invalid shape"),
        ('"F32"', "[1.0]", "[0, 4]", "tensor 'x' has an invalid shape"),
        ('"F32"', "[1e0]", "[0, 4]", "tensor 'x' has an invalid shape"),
        ('"F32"', '"[1]"', "[0, 4]", "tensor 'x' has an invalid shape"),
        ('"F32"', "null", "[0, 4]", "tensor 'x' has an invalid shape"),
        ('"F32"', '{"0": 1}', "[0, 4]", "tensor 'x' has an invalid shape"),
        ('"F32"', "[[1]]", "[0, 4]", "tensor 'x' has an invalid shape"),
        ('"F32"', "[1]", "[false, 4]", "tensor 'x' has an invalid data_offsets"),
        ('"F32"', "[1]", "[0.0, 4.0]", "tensor 'x' has an invalid data_offsets"),
        ('"F32"', "[1]", "[0, 4, 8]", "tensor 'x' has data_offsets"),
        ('"F32"', "[1]", "[-4, 0]", "tensor 'x' has data_offsets .* outside"),
        ('"F32"', "[1]", f"[0, {2**64 + 4}]", "tensor 'x' has data_offsets .* outside"),
        ('"F32"', f"[{2**64 - 1}, {2**64 - 1}]", "[0, 4]", "tensor 'x' has an absurd shape"),
    ],
)
def test_safetensors_every_field_is_type_and_range_checked(dtype, shape, offsets, match):
    blob = _st_text(_entry_json(dtype, shape, offsets), b"\0" * 4)
    with pytest.raises(tw.FormatError, match=match):
        safetensors.loads(blob)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (_entry_json(shape="[NaN]"), "NaN is not JSON"),
        (_entry_json(shape="[Infinity]"), "Infinity is not JSON"),
        (_entry_json(offsets="[0, -Infinity]"), "-Infinity is not JSON"),
        ('{"__metadata__": {"k": NaN}}', "NaN is not JSON"),
        ('{"__metadata__": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
        ("\ufeff{}", "not valid JSON"),
        ('{"\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "lone surrogate"),
        ('{"__metadata__": {"k": "\\udfff"}}', "lone surrogate"),
        ('{"__metadata__": {"\\ud83d": "v"}}', "lone surrogate"),
        ('{"__metadata__": {"k": ' + _BIG + "}}", "strings"),
        ('{"__metadata__": ["k", "v"]}', "strings"),
        ('{"__metadata__": "k=v"}', "strings"),
    ],
)
def test_safetensors_hostile_json_is_a_format_error(text, match):
    blob = _st_text(text, b"\0" * 4 if '"x"' in text or "\\ud800" in text else b"")
    with pytest.raises(tw.FormatError, match=match):
        safetensors.loads(blob)
    if "__metadata__" in text or "not" in match:
        with pytest.raises(tw.FormatError, match=match):
            safetensors.metadata(blob)


def test_safetensors_surrogate_pairs_and_big_but_valid_integers_still_read():
    # a correct surrogate pair is one character; 20-digit integers are u64 territory
    text = (
        '{"\\ud83d\\ude00": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        ' "e": {"dtype": "U8", "shape": [0, 4611686018427387904], "data_offsets": [4, 4]}}'
    )
    out = safetensors.loads(_st_text(text, b"\0\0\x80\x3f"))
    assert list(out) == ["\U0001f600", "e"]
    assert out["\U0001f600"].tolist() == [1.0] and out["e"].shape == (0, 2**62)


def test_format_errors_quote_hostile_values_briefly():
    long_name = "n" * 1_000_000 + "TAIL"
    header = {long_name: {"dtype": "Q128", "shape": [1], "data_offsets": [0, 4]}}
    with pytest.raises(tw.FormatError) as e:
        safetensors.loads(_st(header, b"\0" * 4))
    message = str(e.value)
    assert len(message) < 500 and "nnnn" in message and "TAIL" in message
    shape = json.dumps(["x" * 1000] * 1000)
    with pytest.raises(tw.FormatError, match="invalid shape") as e:
        safetensors.loads(_st_text(_entry_json(shape=shape), b"\0" * 4))
    assert len(str(e.value)) < 500
    body = struct.pack(">I", 1_000_000) + b"\xff" * 1_000_000 + struct.pack(">IIII", 0, 0, 0, 0)
    with pytest.raises(tw.FormatError, match="UTF-8") as e:
        ptth.loads(_ptth(1, body))
    assert len(str(e.value)) < 500


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["dtype", "shape", "data_offsets", None, "__metadata__"]),
    value=_JSON_VALUES,
)
def test_property_any_json_in_any_safetensors_field_is_read_or_refused(field, value):
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    header: dict = {"x": entry}
    if field is None:
        header["x"] = value
    elif field == "__metadata__":
        header["__metadata__"] = value
    else:
        entry[field] = value
    try:
        out = safetensors.loads(_st(header, b"\0" * 4))
    except tw.FormatError:
        return
    assert sum(a.nbytes for a in out.values()) <= 4


def test_npz_file_with_a_negative_member_offset_is_a_format_error(tmp_path):
    # the central directory claims to start 100 bytes past where it is, so zipfile puts
    # the member 100 bytes before the start of the file: a negative seek (an OSError on
    # a real file, a ValueError in memory)
    for compressed in (False, True):
        blob = bytearray(npz.dumps({"a": np.arange(4, dtype=np.float32)}, compressed=compressed))
        eocd = blob.rindex(b"PK\x05\x06")
        (offset,) = struct.unpack_from("<I", blob, eocd + 16)
        struct.pack_into("<I", blob, eocd + 16, offset + 100)
        path = tmp_path / f"neg{compressed}.npz"
        path.write_bytes(bytes(blob))
        with pytest.raises(tw.FormatError, match="-100"):
            npz.loads(bytes(blob))
        with pytest.raises(tw.FormatError, match="-100"):
            npz.load(path)


def test_npz_reads_in_place_without_copying_the_input():
    blob = bytearray(npz.dumps({"a": np.arange(64, dtype=np.uint8)}))  # uint8: never misaligned
    out = npz.loads(blob)
    assert np.shares_memory(out["a"], np.frombuffer(blob, np.uint8))


@pytest.mark.parametrize("mod", [safetensors, npz, md5list, ptth])
def test_unreadable_buffers_are_input_errors(mod):
    import mmap

    closed = mmap.mmap(-1, 64)
    closed.close()
    strided = np.zeros((4, 4), np.uint8)[:, 0]
    for source in (closed, strided, "text", 12, None):
        with pytest.raises(tw.InputError):
            mod.loads(source)
