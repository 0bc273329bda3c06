"""The serializers users have today, implemented the way their users write them.

Each peer is a pair ``encode(tensors) -> blob`` / ``decode(blob, like) -> tensors``
over a ``dict[str, np.ndarray]``. ``like`` is the original dict: formats that carry no
names or shapes of their own (the seed's list format, zstd/lz4 over raw bytes) use it
only to give the names back (and, for the raw-byte compressors, the shapes a real
application would have to ship separately). A blob is ``bytes`` or a list of ``bytes``
(Flower ships one message part per array).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from typing import Any

import numpy as np

__all__ = ["PEERS", "md5list_deserialize", "md5list_serialize", "peer_versions"]

Tensors = dict[str, np.ndarray]


# -- the first seed: pure-Python list format with an MD5 trailer (sent over Kafka) -----
# Copied from ../shared/seeds/kafka-fl-serialization.md (logging/try-except removed, the
# format and every operation kept): this is the baseline every ratio refers to.
def md5list_serialize(weights: list[np.ndarray]) -> bytes:
    """The seed's ``serialize_weights``: count, then per array ndim/shape/dtype/bytes; MD5."""
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


def md5list_deserialize(serialized_data: bytes) -> list[np.ndarray] | None:
    """The seed's ``deserialize_weights`` (returns None on a checksum mismatch, as it does)."""
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


def _named(like: Tensors, arrays: list[np.ndarray] | None) -> Tensors:
    if arrays is None:
        raise ValueError("checksum verification failed")
    return dict(zip(like, arrays))


def seed_encode(t: Tensors) -> bytes:
    return md5list_serialize(list(t.values()))


def seed_decode(blob: bytes, like: Tensors) -> Tensors:
    return _named(like, md5list_deserialize(blob))


# -- pickle protocol 5 (in-band) -------------------------------------------------------
def pickle_encode(t: Tensors) -> bytes:
    return pickle.dumps(t, protocol=5)


def pickle_decode(blob: bytes, like: Tensors) -> Tensors:
    return pickle.loads(blob)


# -- Flower's default: one np.save per array into a BytesIO, a list of byte strings ----
def npsave_encode(t: Tensors) -> list[bytes]:
    out = []
    for a in t.values():
        bio = io.BytesIO()
        np.save(bio, a, allow_pickle=False)
        out.append(bio.getvalue())
    return out


def npsave_decode(blob: list[bytes], like: Tensors) -> Tensors:
    return _named(like, [np.load(io.BytesIO(b), allow_pickle=False) for b in blob])


# -- np.savez / np.savez_compressed -----------------------------------------------------
def savez_encode(t: Tensors) -> bytes:
    bio = io.BytesIO()
    np.savez(bio, **t)
    return bio.getvalue()


def savez_compressed_encode(t: Tensors) -> bytes:
    bio = io.BytesIO()
    np.savez_compressed(bio, **t)
    return bio.getvalue()


def savez_decode(blob: bytes, like: Tensors) -> Tensors:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -- safetensors (numpy API) -------------------------------------------------------------
def safetensors_encode(t: Tensors) -> bytes:
    from safetensors.numpy import save

    return save(t)


def safetensors_decode(blob: bytes, like: Tensors) -> Tensors:
    from safetensors.numpy import load

    return load(blob)


# -- zstd / lz4 over the raw concatenated bytes (shapes shipped out of band) -------------
def _concat(t: Tensors) -> bytes:
    return b"".join(np.ascontiguousarray(a).data.cast("B") for a in t.values())


def _split(raw: bytes, like: Tensors) -> Tensors:
    out = {}
    pos = 0
    for name, a in like.items():
        out[name] = np.frombuffer(raw, dtype=a.dtype, count=a.size, offset=pos).reshape(a.shape)
        pos += a.nbytes
    return out


def zstd_encode(t: Tensors, level: int = 3) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level, threads=-1).compress(_concat(t))


def zstd_decode(blob: bytes, like: Tensors) -> Tensors:
    import zstandard

    return _split(zstandard.ZstdDecompressor().decompress(blob), like)


def lz4_encode(t: Tensors) -> bytes:
    import lz4.frame

    return lz4.frame.compress(_concat(t))


def lz4_decode(blob: bytes, like: Tensors) -> Tensors:
    import lz4.frame

    return _split(lz4.frame.decompress(blob), like)


def peer_versions() -> dict[str, str]:
    """Versions of the peer packages installed (for the report)."""
    from importlib import metadata

    out = {"numpy": np.__version__}
    for pkg in ("safetensors", "zstandard", "lz4", "blake3", "matplotlib", "psutil"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


PEERS: list[tuple[str, Any, Any, str]] = [
    # (name, encode, decode, what it is)
    ("seed md5list", seed_encode, seed_decode, "first seed: pure-Python list + MD5 (baseline)"),
    ("pickle-5", pickle_encode, pickle_decode, "pickle protocol 5, in-band"),
    ("np.save/array", npsave_encode, npsave_decode, "Flower default: np.save per array"),
    ("np.savez", savez_encode, savez_decode, "np.savez into BytesIO"),
    ("np.savez_compressed", savez_compressed_encode, savez_decode, "zip/deflate"),
    ("safetensors", safetensors_encode, safetensors_decode, "safetensors.numpy save/load"),
    ("py-zstd:3 raw", zstd_encode, zstd_decode, "zstandard over raw bytes, threads=-1"),
    ("py-lz4 raw", lz4_encode, lz4_decode, "lz4.frame over raw bytes"),
]
