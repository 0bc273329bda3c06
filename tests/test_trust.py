"""Authenticated and signed payloads (docs/FORMAT.md section 10): round trips through
every writer and reader, and every refusal, with an attacker who recomputes every plain
blake3 (written from the spec with the ``blake3`` package, sharing no code with the
library)."""

from __future__ import annotations

import json
import os
import struct

import blake3
import numpy as np
import pytest

import tensorwire as tw

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
SK = tw.generate_signing_key()
SK2 = tw.generate_signing_key()
PK, PK2 = tw.public_key(SK), tw.public_key(SK2)
TENSORS = {"w": np.arange(1000, dtype=np.float32), "b": np.ones(7, np.float64)}


# -- the attacker, from the spec ---------------------------------------------------------


def header_len(blob: bytes) -> int:
    return struct.unpack_from("<Q", blob, 16)[0]


def header(blob: bytes) -> dict:
    return json.loads(blob[64 : 64 + header_len(blob)])


def mac_key(key: bytes) -> bytes:
    return blake3.blake3(key, derive_key_context="tensorwire 1 payload mac").digest()


def reseal(blob: bytes, key: bytes | None = None) -> bytes:
    """The header hash recomputed: plain BLAKE3, or keyed with ``key``'s MAC subkey."""
    h = header_len(blob)
    covered = blob[:32] + blob[64 : 64 + h]
    digest = (blake3.blake3(covered, key=mac_key(key)) if key else blake3.blake3(covered)).digest()
    return blob[:32] + digest + blob[64:]


def with_header(blob: bytes, doc: dict, key: bytes | None = None) -> bytes:
    """``doc`` as the header (padded to a multiple of 64, the preamble's header length
    updated), every tensor hash recomputed from the data as it stands, then the header
    hash (plain, or keyed with ``key``)."""
    h = header_len(blob)
    data_start = 64 + h
    for t in doc["tensors"]:
        start = data_start + t["offset"]
        t["hash"] = blake3.blake3(blob[start : start + t["length"]]).hexdigest()
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 64)
    pre = blob[:16] + struct.pack("<Q", len(raw)) + blob[24:64]
    return reseal(pre + raw + blob[data_start:], key)


def change_tensor(blob: bytes, key: bytes | None = None) -> bytes:
    """A data byte of tensor "w" changed, its blake3 and the header hash recomputed."""
    doc = header(blob)
    (w,) = [t for t in doc["tensors"] if t["name"] == "w"]
    at = 64 + header_len(blob) + w["offset"] + 5
    changed = blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]
    return with_header(changed, doc, key)


def refused(blob: bytes, match: str, **read) -> tw.AuthenticationError:
    with pytest.raises(tw.AuthenticationError, match=match) as info:
        tw.decode(blob, **read)
    assert isinstance(info.value, tw.IntegrityError)
    return info.value


def same(a, b) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# -- round trips -------------------------------------------------------------------------


def test_key_ids_and_keys() -> None:
    kid = tw.key_id(KEY)
    expected = blake3.blake3(KEY, derive_key_context="tensorwire 1 key id").digest()[:8].hex()
    assert kid == expected and len(kid) == 16
    assert len(SK) == 32 and SK != SK2 and len(PK) == 32 and tw.public_key(SK) == PK
    for bad in (b"x" * 31, b"x" * 33, b""):
        with pytest.raises(tw.InputError, match="32 bytes"):
            tw.key_id(bad)
        with pytest.raises(tw.InputError, match="32 bytes"):
            tw.encode(TENSORS, key=bad)
        with pytest.raises(tw.InputError, match="32 bytes"):
            tw.encode(TENSORS, signing_key=bad)
        with pytest.raises(tw.InputError):
            tw.decode(tw.encode(TENSORS), key=bad)
    with pytest.raises(tw.InputError, match="bytes"):
        tw.encode(TENSORS, key="k" * 32)
    with pytest.raises(tw.InputError, match="32-byte public key"):
        tw.decode(tw.encode(TENSORS), trusted_keys=[PK[:31]])
    with pytest.raises(tw.InputError, match="has id"):
        tw.decode(tw.encode(TENSORS, key=KEY), keys={tw.key_id(OTHER): KEY})


def test_keyed_round_trip() -> None:
    blob = tw.encode(TENSORS, key=KEY, codec={"b": "zstd"})
    assert blob[12] == 1 and blob[13] == 0 and struct.unpack_from("<H", blob, 10)[0] == 1
    same(tw.decode(blob, key=KEY), TENSORS)
    same(tw.decode(blob, keys={tw.key_id(OTHER): OTHER, tw.key_id(KEY): KEY}), TENSORS)
    same(tw.decode(blob, keys=[OTHER, KEY]), TENSORS)
    with tw.open(blob, key=KEY) as r:
        assert r.key_id == tw.key_id(KEY) and r.signer is None
        assert isinstance(r.created, int) and abs(r.created / 1000 - __import__("time").time()) < 60
        assert isinstance(r.nonce, bytes) and len(r.nonce) == 16
        assert r.version == (1, 1)
        assert header(blob)["auth"]["nonce"] == r.nonce.hex()
    assert tw.open(tw.encode(TENSORS, key=KEY), key=KEY).nonce != tw.open(blob, key=KEY).nonce


def test_signed_round_trip_and_plain_payloads_unchanged() -> None:
    blob = tw.encode(TENSORS, signing_key=SK)
    assert blob[12] == 0 and blob[13] == 1
    same(tw.decode(blob), TENSORS)
    same(tw.decode(blob, trusted_keys=[PK2, PK]), TENSORS)
    same(tw.decode(blob, trusted_keys=[PK.hex()]), TENSORS)
    r = tw.open(blob)
    assert r.signer == PK and r.key_id is None and len(r.nonce) == 16
    assert header(blob)["auth"]["signer"] == PK.hex()
    plain = tw.encode(TENSORS)
    assert plain[10:16] == bytes(6) and "auth" not in header(plain)
    p = tw.open(plain)
    assert (p.signer, p.key_id, p.created, p.nonce, p.version) == (None, None, None, None, (1, 0))


def test_both_and_every_reader(tmp_path) -> None:
    blob = tw.encode(TENSORS, key=KEY, signing_key=SK)
    assert blob[12] == 1 and blob[13] == 1
    same(tw.decode(blob, key=KEY, trusted_keys=[PK]), TENSORS)
    path = tmp_path / "both.tw"
    tw.save(TENSORS, path, key=KEY, signing_key=SK, codec="shuffle+zstd")
    for mmap in (True, False):
        same(tw.load(path, key=KEY, trusted_keys=[PK], mmap=mmap), TENSORS)
        with tw.open(path, key=KEY, trusted_keys=[PK], mmap=mmap) as r:
            assert r.signer == PK and r.key_id == tw.key_id(KEY)
            r.verify()
            same(r.tensors(), TENSORS)
    with pytest.raises(tw.AuthenticationError, match="pass key= or keys="):
        tw.load(path)
    with pytest.raises(tw.AuthenticationError, match="not among the trusted keys"):
        tw.open(path, key=KEY, trusted_keys=[PK2])
    same(tw.decode(bytearray(blob), key=KEY), TENSORS)


# -- refusals ------------------------------------------------------------------------------


def test_missing_and_wrong_keys() -> None:
    blob = tw.encode(TENSORS, key=KEY)
    kid = tw.key_id(KEY)
    e = refused(blob, f"authenticated with key id {kid}; pass key= or keys=")
    refused(blob, f"key id {kid}; pass key= or keys=", verify=False)
    refused(blob, kid, key=OTHER)
    refused(blob, kid, keys={tw.key_id(OTHER): OTHER})
    refused(tw.encode(TENSORS), "payload is not authenticated", key=KEY)
    refused(tw.encode(TENSORS, signing_key=SK), "payload is not authenticated", key=KEY)
    for err in (e,):
        assert KEY.hex() not in str(err) and KEY.hex() not in repr(err)


def test_an_attacker_recomputing_every_plain_blake3_is_refused() -> None:
    keyed = tw.encode(TENSORS, key=KEY)
    forged = change_tensor(keyed)  # plain hash in a keyed payload
    refused(forged, "header MAC mismatch", key=KEY)
    refused(change_tensor(keyed, OTHER), "header MAC mismatch", key=KEY)
    # The auth byte cleared: a plain payload now, refused by a reader holding the key.
    stripped = reseal(keyed[:12] + b"\0" + keyed[13:])
    refused(change_tensor(stripped), "not authenticated", key=KEY)
    refused(keyed[:12] + b"\0" + keyed[13:], "not authenticated", key=KEY)
    # The auth byte set to an unknown value, the flags to unknown bits.
    with pytest.raises(tw.FormatError, match="byte 12"):
        tw.decode(reseal(keyed[:12] + b"\2" + keyed[13:]), key=KEY)
    signed = tw.encode(TENSORS, signing_key=SK)
    with pytest.raises(tw.FormatError, match="byte 13"):
        tw.decode(reseal(signed[:13] + b"\3" + signed[14:]))
    # A tensor changed in a signed payload: the signature no longer verifies, whoever reads.
    refused(change_tensor(signed), "does not verify")
    refused(change_tensor(signed), "does not verify", trusted_keys=[PK])
    # The signer swapped for the attacker's: not trusted (and the signature is not his).
    doc = header(signed)
    doc["auth"]["signer"] = PK2.hex()
    renamed = with_header(signed, doc)
    refused(renamed, "does not verify")
    refused(renamed, "not among the trusted keys", trusted_keys=[PK])
    # The signature of another payload by another key.
    other = tw.encode(TENSORS, signing_key=SK2)
    refused(signed[:-64] + other[-64:], "does not verify")
    # Signed by a key not trusted; unsigned while signers are required.
    refused(signed, "not among the trusted keys", trusted_keys=[PK2])
    refused(tw.encode(TENSORS), "not signed", trusted_keys=[PK])
    refused(tw.encode(TENSORS, key=KEY), "not signed", key=KEY, trusted_keys=[PK])
    # The trailer cut.
    refused(signed[:-1], "63 of 64")
    refused(signed[:-64], "0 of 64")
    with pytest.raises(tw.FormatError, match="64 unexpected bytes"):
        tw.decode(reseal(signed[:13] + b"\0" + signed[14:]))


@pytest.mark.parametrize("kind", ["keyed", "signed", "both", "encrypted", "encrypted-all"])
def test_every_header_byte_flipped_and_resealed_is_refused(kind: str) -> None:
    key = KEY if kind != "signed" else None
    sk = SK if kind in ("signed", "both") else None
    encrypt = {"encrypted": True, "encrypted-all": "all"}.get(kind, False)
    w = {"w": np.arange(16, dtype=np.float32)}
    blob = tw.encode(w, key=key, signing_key=sk, encrypt=encrypt)
    read = {"key": key, "trusted_keys": [PK] if sk else None}
    end = 64 + header_len(blob)
    rng = np.random.default_rng(1)
    offsets = list(range(64, end)) + list(rng.integers(end, len(blob), 32))
    # A keyed header is authenticated before it is parsed; a signed one is parsed (its
    # plain hash, recomputed, checks out) and then malformed JSON is a FormatError.
    allowed = (tw.IntegrityError,) if key else (tw.IntegrityError, tw.FormatError)
    authentication = 0
    for i in offsets:
        bad = bytearray(blob)
        bad[i] ^= 0x04
        bad = bytes(bad)
        for attempt in (bad, reseal(bad)):
            with pytest.raises(tw.TensorwireError) as info:
                tw.decode(attempt, **read)
            assert isinstance(info.value, allowed), (i, info.value)
            authentication += isinstance(info.value, tw.AuthenticationError)
    assert authentication > len(offsets) // 2


def test_auth_objects_are_strict() -> None:
    blob = tw.encode(TENSORS, key=KEY)
    for change, match in [
        (lambda a: a.update(extra=1), "unknown field `extra`"),
        (lambda a: a.update(nonce="00"), "auth.nonce"),
        (lambda a: a.update(created=-1), "auth is not valid"),
        (lambda a: a.update(created=1.5), "auth is not valid"),
        (lambda a: a.update(signer="00" * 32), "auth names a signer"),
    ]:
        doc = header(blob)
        change(doc["auth"])
        with pytest.raises(tw.FormatError, match=match):
            tw.decode(with_header(blob, doc, KEY), key=KEY)
    doc = header(blob)
    doc["auth"]["key_id"] = tw.key_id(OTHER)
    refused(with_header(blob, doc, KEY), "header MAC mismatch", key=OTHER)


def test_secrets_never_appear_in_reprs_or_messages() -> None:
    blob = tw.encode(TENSORS, key=KEY, signing_key=SK)
    texts = [repr(tw.open(blob, key=KEY))]
    for read in ({}, {"key": OTHER}, {"key": KEY, "trusted_keys": [PK2]}):
        try:
            tw.decode(blob, **read)
        except tw.TensorwireError as e:
            texts += [str(e), repr(e)]
    for t in texts:
        for secret in (KEY, OTHER, SK):
            assert secret.hex() not in t and repr(secret) not in t, t


def test_random_keys_round_trip() -> None:
    key = os.urandom(32)
    same(tw.decode(tw.encode(TENSORS, key=key, signing_key=SK), key=key), TENSORS)
