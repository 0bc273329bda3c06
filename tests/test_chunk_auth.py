"""Authenticated chunks: tw.chunk / tw.encode_chunks with key=, tw.Reassembler(key=)
(docs/FORMAT.md, "Chunk framing": the flags byte and the 16-byte tag)."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Optional

import blake3
import forge
import numpy as np
import pytest

import tensorwire as tw
from tensorwire import chunking

HEADER = chunking.CHUNK_HEADER_LEN
TAG = 16
KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def reseal(piece: bytes | bytearray) -> bytes:
    """Recompute a tampered chunk's CRC-32 as a forger would; the tag, which needs the
    key, is left as it was."""
    b = bytearray(piece)
    end = len(b) - (TAG if b[6] & 1 else 0)
    b[84:88] = struct.pack("<I", zlib.crc32(bytes(b[HEADER:end]), zlib.crc32(bytes(b[:84]))))
    return bytes(b)


def tag_from_spec(piece: bytes, key: bytes) -> bytes:
    """The tag FORMAT.md defines: BLAKE3 keyed with derive_key("tensorwire 1 piece mac",
    key), over header bytes 0..88 and the body, first 16 bytes."""
    (body_len,) = struct.unpack_from("<I", piece, 48)
    sub = blake3.blake3(key, derive_key_context="tensorwire 1 piece mac").digest()
    return blake3.blake3(piece[: HEADER + body_len], key=sub).digest()[:TAG]


def feed(r: tw.Reassembler, pieces) -> list[bytes]:
    return [p for p in (r.add(c) for c in pieces) if p is not None]


def state(r: tw.Reassembler) -> tuple:
    """What a dropped chunk must leave unchanged."""
    stats = {k: v for k, v in r.stats.items() if k != "dropped"}
    return r.pending(), r.pending_bytes, stats


def assert_dropped(r: tw.Reassembler, piece: bytes, error=tw.AuthenticationError) -> None:
    before, dropped = state(r), r.stats["dropped"]
    with pytest.raises(error):
        r.add(piece)
    assert r.stats["dropped"] == dropped + 1
    assert state(r) == before


def flip(piece: bytes, k: int = 0) -> bytes:
    """``piece`` with its first body byte changed and its CRC recomputed."""
    bad = bytearray(piece)
    bad[HEADER] ^= k + 1
    return reseal(bad)


# -- writing ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [HEADER + TAG + 1, 200, 1000, 70_000])
def test_tagged_chunks_follow_the_spec_and_fit(max_bytes: int) -> None:
    payload = random.Random(max_bytes).randbytes(50_000)
    pieces = list(tw.chunk(payload, max_bytes, key=KEY))
    assert all(len(p) <= max_bytes for p in pieces)
    bodies = b""
    for p in pieces:
        info = chunking.chunk_info(p)
        assert info["authenticated"] is True and info["tag_len"] == TAG
        assert p[6] == 1 and p[7] == 0
        assert len(p) == HEADER + info["body_len"] + TAG
        assert info["body_len"] == min(max_bytes - HEADER - TAG, 50_000 - info["offset"])
        assert p[-TAG:] == tag_from_spec(p, KEY)
        (crc,) = struct.unpack_from("<I", p, 84)
        assert crc == zlib.crc32(p[HEADER:-TAG], zlib.crc32(p[:84]))
        bodies += p[HEADER:-TAG]
    assert bodies == payload
    with pytest.raises(tw.InputError, match="16-byte tag"):
        tw.chunk(payload, HEADER + TAG, key=KEY)


def test_without_a_key_the_output_is_unchanged() -> None:
    payload = random.Random(2).randbytes(5000)
    pid = bytes(16)
    plain = list(tw.chunk(payload, 1000, payload_id=pid))
    assert list(tw.chunk(payload, 1000, payload_id=pid, key=None)) == plain
    assert all(p[6] == 0 and not chunking.chunk_info(p)["authenticated"] for p in plain)
    assert chunking.chunk_info(plain[0])["tag_len"] == 0
    tagged = list(tw.chunk(payload, 1000 + TAG, payload_id=pid, key=KEY))
    assert [p[HEADER:-TAG] for p in tagged] == [p[HEADER:] for p in plain]


@pytest.mark.parametrize("key", [b"short", bytes(33), "a" * 32])
def test_bad_keys_are_refused(key) -> None:
    with pytest.raises((tw.InputError, TypeError)):
        tw.chunk(b"x", 1000, key=key)
    with pytest.raises((tw.InputError, TypeError)):
        tw.Reassembler(key=key)
    with pytest.raises((tw.InputError, TypeError)):
        tw.Reassembler(keys=[KEY, key])


def test_key_and_keys_options() -> None:
    with pytest.raises(tw.InputError, match="not both"):
        tw.Reassembler(key=KEY, keys=[OTHER])
    with pytest.raises(tw.InputError, match="empty"):
        tw.Reassembler(keys=[])
    assert tw.Reassembler().key_ids == []
    ids = tw.Reassembler(keys=[KEY, OTHER]).key_ids
    assert len(ids) == 2 and all(len(i) == 16 for i in ids) and ids[0] != ids[1]
    assert tw.Reassembler(key=KEY).key_ids == ids[:1]
    # The {key_id: key} mapping decode takes: its values are the keys.
    assert tw.Reassembler(keys={ids[1]: OTHER}).key_ids == ids[1:]
    assert KEY.hex() not in repr(tw.Reassembler(key=KEY))


# -- reading ----------------------------------------------------------------------------


def test_round_trip_shuffled_and_duplicated_with_one_of_several_keys() -> None:
    rng = random.Random(3)
    model = {"w": np.arange(5000, dtype=np.float32), "b": np.ones(7, np.int8)}
    for key in (KEY, OTHER):
        pieces = list(tw.encode_chunks(model, 700, key=key, codec="shuffle+zstd"))
        assert all(len(p) <= 700 and chunking.chunk_info(p)["authenticated"] for p in pieces)
        order = pieces + rng.sample(pieces, k=len(pieces) // 2)
        rng.shuffle(order)
        r = tw.Reassembler(keys=[KEY, OTHER])
        (blob,) = feed(r, order)
        # The payload itself is authenticated with the key too.
        with tw.open(blob, key=key) as got:
            assert got.key_id == tw.key_id(key)
            assert all(np.array_equal(got[n], model[n]) for n in model)
        assert r.stats["dropped"] == 0 and r.pending_bytes == 0
        # A reassembler without keys accepts them on their CRC.
        assert feed(tw.Reassembler(), order) == [blob]


def test_untagged_foreign_and_altered_pieces_are_dropped() -> None:
    payload = random.Random(4).randbytes(10_000)
    pieces = list(tw.chunk(payload, 1000, key=KEY))
    r = tw.Reassembler(key=KEY)
    assert r.add(pieces[0]) is None
    victim = pieces[1]
    assert_dropped(r, list(tw.chunk(payload, 1000 - TAG))[1])  # untagged
    assert_dropped(r, list(tw.chunk(payload, 1000, key=OTHER))[1])  # another key
    for at in [*range(8, 84, 5), 84, 88, 500, len(victim) - TAG, len(victim) - 1]:
        bad = bytearray(victim)
        bad[at] ^= 0x01
        for piece in {bytes(bad), reseal(bad)}:
            if piece != victim:
                assert_dropped(r, piece, (tw.IntegrityError, tw.FormatError))
    # The tag cut off (the flag cleared, the CRC resealed: a valid plain chunk).
    stripped = bytearray(victim[:-TAG])
    stripped[6] = 0
    assert_dropped(r, reseal(stripped))
    assert_dropped(r, victim[:-1], tw.IntegrityError)
    assert_dropped(r, b"\x89TWC garbage", (tw.FormatError, tw.IntegrityError))
    assert feed(r, pieces[1:]) == [payload]
    assert r.stats["rejected"] == 0 and r.stats["completed"] == 1


def test_the_authentication_error_says_what_failed() -> None:
    r = tw.Reassembler(key=KEY)
    with pytest.raises(tw.AuthenticationError, match="not authenticated") as e:
        r.add(next(tw.chunk(b"abc", 1000)))
    assert isinstance(e.value, tw.IntegrityError)
    with pytest.raises(tw.AuthenticationError, match=r"matches none .*" + r.key_ids[0]):
        r.add(next(tw.chunk(b"abc", 1000, key=OTHER)))


def test_forgeries_under_the_payload_id_cannot_make_it_fail() -> None:
    """Without keys, five forged bodies for one index, sent first, turn the real one
    away; with keys they cost nothing, whatever they claim."""
    payload = random.Random(5).randbytes(8000)
    pid = b"P" * 16

    def forgeries(key: Optional[bytes]) -> list[bytes]:
        """Plain chunks (key None), or chunks tagged with ``key``: five other bodies for
        index 2, other geometries under the same id, one claiming a huge total."""
        real = list(tw.chunk(payload, 1000, payload_id=pid, key=key))[2]
        out = [flip(real, k) for k in range(5)]
        out += list(tw.chunk(bytes(3000), 500, payload_id=pid, key=key))
        big = bytearray(next(tw.chunk(bytes(2000), 1000, payload_id=pid, key=key)))
        big[32:40] = struct.pack("<Q", 1 << 40)
        big[28:32] = struct.pack("<I", -(-(1 << 40) // (1000 - HEADER - (TAG if key else 0))))
        out.append(reseal(big))
        return out

    plain = list(tw.chunk(payload, 1000, payload_id=pid))
    r = tw.Reassembler(max_pending_bytes=100_000, when_full="refuse")
    for f in forgeries(None):
        try:
            r.add(f)
        except tw.TensorwireError:
            pass
    outcomes = []
    for p in plain:
        try:
            outcomes.append(r.add(p))
        except tw.TensorwireError as e:
            outcomes.append(e)
    assert payload not in outcomes, "the attack works without keys"

    tagged = list(tw.chunk(payload, 1000, payload_id=pid, key=KEY))
    r = tw.Reassembler(key=KEY, max_pending_bytes=100_000, when_full="refuse")
    # Plain forgeries, forgeries tagged with another key, and real chunks altered.
    attack = forgeries(None) + forgeries(OTHER) + [flip(p) for p in tagged]
    for f in attack:
        assert_dropped(r, f)
    got = []
    for i, p in enumerate(tagged):
        for f in attack[i::3]:
            assert_dropped(r, f)
        got += [x for x in [r.add(p)] if x is not None]
    assert got == [payload]
    s = r.stats
    assert (s["completed"], s["conflicts"], s["rejected"], s["evicted"]) == (1, 0, 0, 0)


FLOOD = textwrap.dedent(
    """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # before anything loads
    import os, random, struct, sys, zlib
    import tensorwire as tw
    sys.path.insert(0, sys.argv[1])
    from local_process import peak_mib

    key = bytes(range(32))
    pid = b"victim-payload!!"
    payload = random.Random(6).randbytes(4 << 20)
    legit = list(tw.chunk(payload, 64 << 10, payload_id=pid, key=key))
    r = tw.Reassembler(key=key, max_pending_bytes=32 << 20, max_payload_bytes=1 << 30)

    def forged(i):
        # Same id, a geometry claiming 1 GiB (or the victim's size), a fresh body, a
        # valid CRC and a made-up tag: a forger who saw the id and knows the framing.
        total = (1 << 30) if i % 2 else len(payload)
        piece = 64 << 10
        count = -(-total // piece)
        index = i % count
        body = os.urandom(16) * (piece // 16)
        head = bytearray(88)
        head[0:8] = b"\\x89TWC\\x01\\x00\\x01\\x00"
        head[8:24] = pid
        struct.pack_into("<IIQQI", head, 24, index, count, total, index * piece, piece)
        head[84:88] = struct.pack("<I", zlib.crc32(body, zlib.crc32(bytes(head[:84]))))
        return bytes(head) + body + os.urandom(16)

    done = None
    attacks = 0
    for i, piece in enumerate(legit):
        for k in range(40):
            try:
                r.add(forged(i * 40 + k))
            except tw.AuthenticationError:
                attacks += 1
        done = r.add(piece) or done
    assert done == payload, "the victim payload did not complete"
    assert r.stats["dropped"] == attacks == 40 * len(legit), r.stats
    assert r.stats["completed"] == 1 and r.pending_bytes == 0, r.stats
    peak = peak_mib()
    print(f"ok {attacks} forged pieces dropped, peak {peak} MiB")
    """
)


def test_a_flood_of_forged_pieces_with_the_victims_id_under_a_memory_limit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FLOOD, str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok "), done.stdout


# -- payloads that are themselves authenticated or signed -----------------------------------

MODEL = {"w": np.arange(3000, dtype=np.float32), "b": np.ones(5, np.int16)}
SK = tw.generate_signing_key()
PK = tw.public_key(SK)


def altered_header(blob: bytes) -> bytes:
    """A byte of the header's space padding changed, the header hash left as it was."""
    (h,) = struct.unpack_from("<Q", blob, 16)
    return blob[: 64 + h - 1] + b"\t" + blob[64 + h :]


def test_a_keyed_payload_chunked_with_its_key_is_checked_with_it() -> None:
    blob = tw.encode(MODEL, key=KEY, codec={"b": "zstd"})
    pieces = list(tw.chunk(blob, 1000, key=KEY))
    info = chunking.chunk_info(pieces[0])
    assert (info["kind"], info["digest"]) == ("tensorwire", blob[32:64].hex())
    # Without the key (or with another one) the chunker cannot read it: plain bytes.
    for key in (None, OTHER):
        info = chunking.chunk_info(next(tw.chunk(blob, 1000, key=key)))
        assert (info["kind"], info["digest"]) == ("bytes", blake3.blake3(blob).hexdigest())
    r = tw.Reassembler(keys=[OTHER, KEY])
    assert feed(r, pieces) == [blob]
    # A header changed under valid tags (a holder of the key who did not reseal, or a
    # damaged sender): the keyed header hash no longer matches, also with verify=False.
    bad = keyed_pieces(altered_header(blob))
    assert len(bad) > 1
    for verify in (True, False):
        r = tw.Reassembler(key=KEY, verify=verify)
        with pytest.raises(tw.AuthenticationError, match="header MAC mismatch"):
            feed(r, bad)
        assert r.stats["failed"] == 1
    # A payload authenticated with a key the reassembler lacks.
    foreign = tw.encode(MODEL, key=bytes(32))
    with pytest.raises(tw.AuthenticationError, match="pass key= or keys="):
        feed(tw.Reassembler(key=KEY), keyed_pieces(foreign))


def keyed_pieces(payload: bytes) -> list[bytes]:
    """Chunks of kind 1 (carrying the content id) of ``payload`` tagged with KEY, as a
    holder of the key makes them, whatever the payload holds."""
    return forge.chunks(payload, 1000, key=KEY)


def test_without_keys_a_keyed_payload_is_handed_on_for_decode_to_check() -> None:
    blob = tw.encode(MODEL, key=KEY, signing_key=SK)
    pieces = list(tw.chunk(blob, 1000, key=KEY))
    r = tw.Reassembler()
    (got,) = feed(r, pieces)
    assert got == blob and r.stats["completed"] == 1
    np.testing.assert_array_equal(tw.decode(got, key=KEY)["w"], MODEL["w"])
    # Its header cannot be checked without the key: an altered one comes through, and
    # decode refuses it.
    (bad,) = feed(tw.Reassembler(), keyed_pieces(altered_header(blob)))
    with pytest.raises(tw.AuthenticationError, match="header MAC mismatch"):
        tw.decode(bad, key=KEY)


def test_trusted_keys_admit_only_payloads_their_signers_signed() -> None:
    signed = tw.encode(MODEL, signing_key=SK)
    for trusted in ([PK], [PK.hex()], (k for k in [PK])):
        r = tw.Reassembler(trusted_keys=trusted)
        assert r.trusted_keys == [PK]
        assert feed(r, tw.chunk(signed, 1000)) == [signed]
    assert tw.Reassembler().trusted_keys is None
    r = tw.Reassembler(trusted_keys=[PK])
    for blob, match in [
        (tw.encode(MODEL), "not signed"),
        (tw.encode(MODEL, signing_key=tw.generate_signing_key()), "not among the trusted"),
        (b"not a payload" * 100, "not a tensorwire payload"),
        (tw.encode(MODEL, key=KEY, signing_key=SK), "signer cannot be checked"),
    ]:
        with pytest.raises(tw.AuthenticationError, match=match):
            feed(r, tw.chunk(blob, 1000))
    both = tw.encode(MODEL, key=KEY, signing_key=SK)
    assert feed(tw.Reassembler(key=KEY, trusted_keys=[PK]), tw.chunk(both, 900, key=KEY)) == [both]
    for bad in ([PK[:31]], "ab" * 32, PK, ["zz" * 32], [1]):
        with pytest.raises(tw.InputError):
            tw.Reassembler(trusted_keys=bad)
