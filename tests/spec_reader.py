"""A reader (and, for crafting test inputs, a writer) of tensorwire payloads, written
from docs/FORMAT.md alone: raw tensors, and coded ones (the block format of "Codec
stages") whose pipelines use the stages :func:`decode_coded` lists. It shares no code
with the library: if the library and the spec drift apart, the tests that use this
module fail. It reads authenticated and signed payloads (section 10) with the keys and
trusted public keys it is given; signatures are verified with the ``cryptography``
package (Ed25519), or, without it, only checked to be present."""

from __future__ import annotations

import hmac
import json
import struct
from collections.abc import Sequence
from typing import Any

import blake3
import numpy as np

try:  # Ed25519 (RFC 8032); without it signatures are checked for presence only
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    VERIFIES_SIGNATURES = True
except ImportError:  # pragma: no cover - cryptography comes with flwr
    VERIFIES_SIGNATURES = False

MAGIC = b"\x89TWR\r\n\x1a\n"
KEY_ID_CONTEXT = "tensorwire 1 key id"
MAC_CONTEXT = "tensorwire 1 payload mac"
SIGNATURE_CONTEXT = b"tensorwire 1 signature\0\0"
AUTH_FIELDS = {"key_id", "created", "nonce", "signer"}
HEX = "0123456789abcdef"
DTYPES = {
    "bool": "|b1",
    "int8": "|i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "|u1",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
    "float16": "<f2",
    "float32": "<f4",
    "float64": "<f8",
    "complex64": "<c8",
    "complex128": "<c16",
}


class SpecError(Exception):
    """The payload breaks the spec."""


class SpecAuthError(SpecError):
    """Who made the payload cannot be established (section 10, "Reading")."""


def key_id(key: bytes) -> str:
    """The id of the shared key ``key`` (section 10, "Keys and subkeys")."""
    return blake3.blake3(key, derive_key_context=KEY_ID_CONTEXT).digest()[:8].hex()


def mac_key(key: bytes) -> bytes:
    """``K_mac``: the subkey that keys the header hash of an authenticated payload."""
    return blake3.blake3(key, derive_key_context=MAC_CONTEXT).digest()


def header_hash(covered: bytes, key: bytes | None = None) -> bytes:
    """BLAKE3 of preamble bytes 0..32 and the header; keyed with ``key``'s K_mac."""
    if key is None:
        return blake3.blake3(covered).digest()
    return blake3.blake3(covered, key=mac_key(key)).digest()


def signed_message(digest: bytes) -> bytes:
    """What a signature signs: the 24-byte context and the header hash."""
    return SIGNATURE_CONTEXT + digest


def check(
    payload: bytes, *, keys: Sequence[bytes] = (), trusted_keys: Sequence[bytes] | None = None
) -> tuple[dict, int, dict | None]:
    """Steps 1 and 2 of section 9 with section 10, "Reading": the preamble, the header
    hash (plain, or keyed with the one of ``keys`` the header names), the length, the
    ``auth`` object and the signature (verified when the ``cryptography`` package is
    installed, see :data:`VERIFIES_SIGNATURES`); with ``trusted_keys`` (public keys),
    only payloads signed by one of them. Returns (header, header length, auth)."""
    if payload[:8] != MAGIC:
        raise SpecError("magic")
    if len(payload) < 64:
        raise SpecError("truncated preamble")
    major, minor = struct.unpack_from("<HH", payload, 8)
    if major != 1:
        raise SpecError("major version")
    auth_byte, flags = payload[12], payload[13]
    if minor == 0 and (auth_byte or flags):
        raise SpecError("bytes 12..14 are reserved in minor version 0")
    if auth_byte not in (0, 1):
        raise SpecError("auth byte")
    if flags & ~1:
        raise SpecError("flags")
    if payload[14:16] != bytes(2):
        raise SpecError("reserved bytes")
    header_len, data_len = struct.unpack_from("<QQ", payload, 16)
    if header_len == 0 or header_len % 64:
        raise SpecError("header length")
    if 64 + header_len > len(payload):
        raise SpecError("truncated header")
    header_bytes = payload[64 : 64 + header_len]
    covered = payload[:32] + header_bytes
    if keys and auth_byte == 0:
        raise SpecAuthError("not authenticated, and keys were given")
    if auth_byte == 1:
        # Only the key id is read before the keyed hash is checked.
        try:
            header = json.loads(header_bytes.decode("utf-8"))
            kid = header["auth"]["key_id"]
        except (ValueError, KeyError, TypeError) as e:
            raise SpecAuthError(f"no key id to authenticate the header with: {e!r}") from None
        key = next((k for k in keys if key_id(k) == kid), None)
        if key is None:
            raise SpecAuthError(f"authenticated with key id {kid!r}, which no key given has")
        if not hmac.compare_digest(header_hash(covered, key), payload[32:64]):
            raise SpecAuthError("header MAC")
    else:
        if header_hash(covered) != payload[32:64]:
            raise SpecError("header hash")
        header = json.loads(header_bytes.decode("utf-8"))
    signed = bool(flags & 1)
    if len(payload) < 64 + header_len + data_len:
        raise SpecError("truncated data section")
    if len(payload) < 64 + header_len + data_len + 64 * signed:
        raise SpecAuthError("truncated signature trailer")
    if len(payload) > 64 + header_len + data_len + 64 * signed:
        raise SpecError("bytes after the end")
    auth = _auth(header.get("auth"), keyed=auth_byte == 1, signed=signed)
    if signed:
        assert auth is not None
        signer = bytes.fromhex(auth["signer"])
        if trusted_keys is not None and signer not in [bytes(k) for k in trusted_keys]:
            raise SpecAuthError("signer not trusted")
        if VERIFIES_SIGNATURES and not _ed25519_verifies(
            signer, payload[-64:], signed_message(payload[32:64])
        ):
            raise SpecAuthError("signature")
    elif trusted_keys is not None:
        raise SpecAuthError("not signed, and trusted keys were given")
    return header, header_len, auth


def _is_hex(value: Any, digits: int) -> bool:
    return isinstance(value, str) and len(value) == digits and set(value) <= set(HEX)


def _auth(auth: Any, *, keyed: bool, signed: bool) -> dict | None:
    """The ``auth`` object checked against the preamble (section 10)."""
    if auth is None:
        if keyed or signed:
            raise SpecError("auth object missing")
        return None
    if not isinstance(auth, dict) or set(auth) - AUTH_FIELDS:
        raise SpecError("auth object with unknown fields")
    if ("key_id" in auth) != keyed or ("signer" in auth) != signed:
        raise SpecError("auth key_id / signer do not match the preamble")
    created = auth.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 1 << 64:
        raise SpecError("auth.created")
    if not _is_hex(auth.get("nonce"), 32):
        raise SpecError("auth.nonce")
    if keyed and not _is_hex(auth["key_id"], 16):
        raise SpecError("auth.key_id")
    if signed and not _is_hex(auth["signer"], 64):
        raise SpecError("auth.signer")
    return auth


def _ed25519_verifies(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def read(
    payload: bytes,
    *,
    keys: Sequence[bytes] = (),
    trusted_keys: Sequence[bytes] | None = None,
    bases: dict[str, np.ndarray] | None = None,
) -> tuple[Any, Any]:
    """Decode a payload: returns (tensors, metadata), with tensors rebuilt into their
    structure (a dict when the header has none). ``keys`` and ``trusted_keys`` as for
    :func:`check`; ``bases``: the base tensor of each delta-coded tensor, by name."""
    header, header_len, _ = check(payload, keys=keys, trusted_keys=trusted_keys)
    (data_len,) = struct.unpack_from("<Q", payload, 24)
    data = payload[64 + header_len : 64 + header_len + data_len]
    arrays = []
    end = 0
    for t in header["tensors"]:
        assert t["offset"] % 64 == 0 and t["offset"] >= end, "layout"
        assert not any(data[end : t["offset"]]), "padding"
        stored = data[t["offset"] : t["offset"] + t["length"]]
        if blake3.blake3(stored).hexdigest() != t["hash"]:
            raise SpecError(f"hash of {t['name']}")
        if t["codec"] == "raw":
            dtype = np.dtype(DTYPES[t["dtype"]])
            arrays.append(np.frombuffer(stored, dtype=dtype).reshape(t["shape"]))
        else:
            arrays.append(decode_coded(t, stored, (bases or {}).get(t["name"])))
        end = t["offset"] + t["length"]
    if end != data_len:
        raise SpecError("data length")
    return _rebuild(header.get("structure"), header["tensors"], arrays), header.get("metadata")


def _rebuild(node: Any, entries: list[dict], arrays: list[np.ndarray]) -> Any:
    if node is None:
        return {e["name"]: a for e, a in zip(entries, arrays)}
    if isinstance(node, int):
        return arrays[node]
    ((kind, body),) = node.items()
    if kind == "dict":
        return {k: _rebuild(v, entries, arrays) for k, v in body}
    items = [_rebuild(v, entries, arrays) for v in body]
    return tuple(items) if kind == "tuple" else items


def write(
    header: dict | bytes,
    data: bytes,
    *,
    major: int = 1,
    minor: int = 0,
    data_len: int | None = None,
    header_len: int | None = None,
    auth: int = 0,
    flags: int = 0,
    key: bytes | None = None,
) -> bytes:
    """Assemble a payload from a header (a dict, or raw bytes for malformed JSON) and a
    data section, with a valid header hash: plain, or keyed with ``key``'s K_mac. Overrides
    forge the preamble's fields (``auth`` and ``flags`` are bytes 12 and 13). A signature
    trailer, if any, is the caller's to append."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 64)
    fixed = MAGIC + struct.pack(
        "<HHBB2xQQ",
        major,
        minor,
        auth,
        flags,
        len(raw) if header_len is None else header_len,
        len(data) if data_len is None else data_len,
    )
    return fixed + header_hash(fixed + raw, key) + raw + data


def entry(name: str, dtype: str, shape: list[int], data: bytes, offset: int, **kw: Any) -> dict:
    """A raw tensor entry for `data` stored at `offset`, with its real hash."""
    e = {
        "name": name,
        "dtype": dtype,
        "shape": shape,
        "codec": "raw",
        "offset": offset,
        "length": len(data),
        "hash": blake3.blake3(data).hexdigest(),
    }
    e.update(kw)
    return e


# --- Codec stages: the block format (docs/FORMAT.md, "Codec stages") ---

#: The NormalFloat4 table ("Blockwise quantizers"), as float32.
NF4 = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=np.float32,
)  # fmt: skip
SCALAR = {"complex64": "float32", "complex128": "float64"}


def _scalar_dtype(name: str) -> np.dtype:
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(DTYPES[SCALAR.get(name, name)])


def _leb128(b: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    for k in range(5):
        if at + k >= len(b):
            raise SpecError("truncated index")
        value |= (b[at + k] & 0x7F) << shift
        shift += 7
        if not b[at + k] & 0x80:
            return value, at + k + 1
    raise SpecError("index over 5 bytes")


def decode_coded(entry: dict, stored: bytes, base: np.ndarray | None = None) -> np.ndarray:
    """Decode one coded tensor (``entry`` its header entry) from its stored bytes, following
    "Block format" and "Decoding one block". Stages read: ``delta``; ``topk``,
    ``threshold``; ``f16``, ``bf16``, ``int8[:channel]``, ``int8:block=N``, ``int4:block=N``,
    ``nf4:block=N``; ``shuffle``; ``zstd``, ``lz4``. Anything else raises :class:`SpecError`."""
    stages: dict[str, list[str]] = {}
    for token in entry["codec"].split("+"):
        name, *args = token.split(":")
        stages[name] = args
    known = {"delta", "topk", "threshold", "f16", "bf16", "int8", "int4", "nf4", "shuffle"}
    if set(stages) - known - {"zstd", "lz4"}:
        raise SpecError(f"this reader does not decode {entry['codec']}")
    shape, sdt = entry["shape"], _scalar_dtype(entry["dtype"])
    numel = int(np.prod(shape, dtype=np.int64))
    n = numel * (2 if entry["dtype"] in SCALAR else 1)
    sparse = "topk" in stages or "threshold" in stages
    quant = next((q for q in ("f16", "bf16", "int8", "int4", "nf4") if q in stages), None)
    qargs = stages.get(quant or "", [])
    block_q = next((int(a[6:]) for a in qargs if a.startswith("block=")), None)
    if quant in ("int4", "nf4") and block_q is None:
        raise SpecError("int4/nf4 without block=N")
    qsize = {"f16": 2, "bf16": 2, "int8": 1, "int4": 1, "nf4": 1}.get(quant or "", sdt.itemsize)

    def value_bytes(v: int) -> int:
        if block_q is None:
            return v * qsize
        return -(-v // block_q) * 4 + (v if quant == "int8" else (v + 1) // 2)

    if len(stored) < 8 or stored[:4] != b"TWC1":
        raise SpecError("codec magic")
    (B,) = struct.unpack_from("<I", stored, 4)
    if not 1 <= B <= 1 << 21 or (block_q is not None and B % block_q):
        raise SpecError("block size")
    channels = shape[0] if "channel" in qargs else 1
    S = channels if quant == "int8" and block_q is None and n else 0
    R = n // channels if channels else 0
    if len(stored) < 8 + 4 * S:
        raise SpecError("scales")
    scales = np.frombuffer(stored, "<f4", S, 8).astype(np.float64)
    if not (np.isfinite(scales).all() and (scales >= 0).all()):
        raise SpecError("scale")
    N, E = -(-n // B), 8 if sparse else 4
    at = 8 + 4 * S + E * N
    if at > len(stored):
        raise SpecError("block table")
    out = np.zeros(n, sdt)
    for b in range(N):
        length = struct.unpack_from("<I", stored, 8 + 4 * S + E * b)[0]
        count = struct.unpack_from("<I", stored, 8 + 4 * S + E * b + 4)[0] if sparse else 0
        lo, m = b * B, min(B, n - b * B)
        body = stored[at : at + length]
        at += length
        if len(body) != length or count > m:
            raise SpecError(f"block {b}")
        most = 5 * count + value_bytes(count) if sparse else value_bytes(m)
        if "zstd" in stages:
            import zstandard

            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=most)
        elif "lz4" in stages:
            import lz4.block

            body = lz4.block.decompress(body, uncompressed_size=most)
        if len(body) > most or (not sparse and len(body) != most):
            raise SpecError(f"block {b} decompresses to {len(body)} bytes")
        local, pos = [], 0
        if sparse:
            for k in range(count):
                delta, pos = _leb128(body, pos)
                local.append(delta if k == 0 else local[-1] + 1 + delta)
            if local and local[-1] >= m:
                raise SpecError("index beyond the block")
        V = count if sparse else m
        values = body[pos:]
        if len(values) != value_bytes(V):
            raise SpecError(f"block {b} holds {len(values)} bytes of values")
        if "shuffle" in stages:
            planes = np.frombuffer(values, np.uint8).reshape(qsize, V)
            values = planes.T.tobytes()
        x = _dequantize(quant, block_q, qargs, values, V, sdt, scales, R, lo, local)
        if sparse:
            out[lo + np.array(local, dtype=np.int64)] = x
        else:
            out[lo : lo + m] = x
    result = out
    if "delta" in stages:
        if base is None:
            raise SpecError("delta needs the base")
        flat = np.ascontiguousarray(base).reshape(-1).view(sdt).astype(np.float64)
        result = (flat + result.astype(np.float64)).astype(sdt)
    dtype = np.dtype(DTYPES[entry["dtype"]]) if entry["dtype"] in SCALAR else sdt
    if dtype.itemsize * numel != result.nbytes:
        raise SpecError("decoded size")
    return result.view(dtype).reshape(shape)


def _dequantize(
    quant: str | None,
    block_q: int | None,
    qargs: list[str],
    values: bytes,
    V: int,
    sdt: np.dtype,
    scales: np.ndarray,
    R: int,
    lo: int,
    local: list[int],
) -> np.ndarray:
    """Step 4, "Quantizer": one block's ``V`` values as scalars of ``sdt``."""
    if quant is None:
        return np.frombuffer(values, sdt, V)
    if quant in ("f16", "bf16"):
        half = np.frombuffer(values, "<f2" if quant == "f16" else _scalar_dtype("bfloat16"), V)
        return half.astype(sdt)
    if block_q is None:  # int8, per tensor or per channel
        v = np.frombuffer(values, np.int8, V).astype(np.float64)
        index = lo + (np.array(local, dtype=np.int64) if local else np.arange(V))
        c = index // R if R else np.zeros(V, np.int64)
        return (v * scales[c] if scales.size else v * 0).astype(sdt)
    nscales = -(-V // block_q)
    bs = np.frombuffer(values, "<f4", nscales).astype(np.float64)
    if not (np.isfinite(bs).all() and (bs >= 0).all()):
        raise SpecError("block scale")
    codes = np.frombuffer(values, np.uint8, offset=4 * nscales)
    if quant == "int8":
        v = codes.view(np.int8).astype(np.float64)
    else:
        nibbles = np.stack([codes & 0xF, codes >> 4], axis=1).reshape(-1)
        if V % 2 and nibbles[-1]:
            raise SpecError("padding nibble")
        nibbles = nibbles[:V]
        if quant == "int4":
            v = (nibbles.astype(np.int8) ^ 8).astype(np.float64) - 8
        else:
            v = NF4[nibbles].astype(np.float64)
    return (v * np.repeat(bs, block_q)[:V]).astype(sdt)
