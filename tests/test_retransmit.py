"""Retransmission without a broker: ``Reassembler.missing``, the request format, the
sender's window (bounds, coalescing, hostile requests) and the receiver's schedule."""

from __future__ import annotations

import math
import os
import tracemalloc
from typing import Any

import forge
import numpy as np
import pytest

import tensorwire as tw
from tensorwire.chunking import chunk_info
from tensorwire.transport import retransmit as rt

MiB = 1 << 20


def pieces_of(payload: bytes, max_bytes: int = 10_000, **kw: object) -> tuple[str, list[bytes]]:
    chunks = tw.chunk(payload, max_bytes, **kw)  # type: ignore[arg-type]
    return chunks.payload_id, list(chunks)


def test_missing_names_the_pieces_not_received() -> None:
    payload = os.urandom(100_000)
    pid, pieces = pieces_of(payload, 1_000)
    r = tw.Reassembler(timeout=30)
    lost = {0, 5, 64, 65, len(pieces) - 1}
    for i, p in enumerate(pieces):
        if i not in lost:
            assert r.add(p, now=10.0) is None
    ((got_pid, received, count, idle, missing),) = r.missing(now=12.0)
    assert (got_pid, count, received) == (pid, len(pieces), len(pieces) - len(lost))
    assert missing == sorted(lost) and idle == pytest.approx(2.0)
    assert r.missing(now=12.0, limit=2)[0][4] == [0, 5]
    assert r.missing(idle=2.5, now=12.0) == [] == r.missing(idle=0, max_idle=1.5, now=12.0)
    assert r.missing(idle=1.0, max_idle=2.0, now=12.0)[0][0] == pid
    assert r.missing(now=40.5) == []  # past the timeout: expired, though not dropped yet
    for bad in [dict(idle=-1.0), dict(idle=3.0, max_idle=2.0), dict(idle=math.nan)]:
        with pytest.raises(tw.InputError, match="idle"):
            r.missing(now=12.0, **bad)  # type: ignore[arg-type]
    with pytest.raises(tw.InputError, match="limit"):
        r.missing(limit=-1)
    with pytest.raises(tw.InputError, match="now"):
        r.missing(now=-1.0)
    for i in sorted(lost):
        done = r.add(pieces[i], now=13.0)
    assert done == payload and r.missing(now=13.0) == []


def test_requests_round_trip_and_bad_arguments_are_refused() -> None:
    pid = os.urandom(16)
    req = rt.retransmit_request(pid.hex(), 50, [0, 3, 49])
    assert len(req) <= rt.MAX_REQUEST_LEN
    info = chunk_info(req)
    assert info["count"] == 1 and not info["authenticated"]
    assert rt.parse_request(tw.Reassembler().add(req)) == (pid.hex(), 50, [0, 3, 49])
    # As FORMAT.md specifies it: the same body as the forger's, written from the spec.
    assert tw.Reassembler().add(req) == tw.Reassembler().add(
        forge.retransmit_request(pid, 50, [0, 3, 49])
    )
    longest = rt.retransmit_request(pid.hex(), 1 << 20, list(range(rt.MAX_REQUEST_INDICES)),
                                    key=os.urandom(32))  # fmt: skip
    assert len(longest) == rt.MAX_REQUEST_LEN
    for args in [
        ("zz" * 16, 5, [1]),
        (pid.hex()[:-2], 5, [1]),
        (pid.hex(), 5, []),
        (pid.hex(), 5, [5]),
        (pid.hex(), 5, [-1]),
        (pid.hex(), 5, [2, 2]),
        (pid.hex(), 5, [3, 1]),
        (pid.hex(), 0, [0]),
        (pid.hex(), 1 << 32, [0]),
        (pid.hex(), 1 << 20, list(range(rt.MAX_REQUEST_INDICES + 1))),
    ]:
        with pytest.raises(tw.InputError):
            rt.retransmit_request(*args)  # type: ignore[arg-type]


def test_window_answers_with_exactly_the_pieces_asked_for_and_coalesces() -> None:
    payload = os.urandom(200_000)
    pid, pieces = pieces_of(payload)
    w = rt.RetransmitWindow(resend_interval=1.0)
    assert w.keep(pid, pieces, now=0.0) and pid in w and len(w) == 1
    got = w.answer(rt.retransmit_request(pid, len(pieces), [1, 7, 20]), now=0.5)
    assert [g is pieces[i] for g, i in zip(got, [1, 7, 20])] == [True] * 3  # not copied
    # Asked again within the interval (another receiver, or a stranger): 7 was resent
    # already, 8 was not.
    assert w.answer(rt.retransmit_request(pid, len(pieces), [7, 8]), now=1.0) == [pieces[8]]
    assert w.answer(rt.retransmit_request(pid, len(pieces), [7, 8]), now=1.6) == [pieces[7]]
    # A replay of one request is a duplicate; another count or id is not this payload.
    req = rt.retransmit_request(pid, len(pieces), [0])
    assert w.answer(req, now=9.0) == [pieces[0]] and w.answer(req, now=20.0) == []
    assert w.answer(rt.retransmit_request(pid, len(pieces) + 1, [0]), now=20.0) == []
    assert w.answer(rt.retransmit_request(os.urandom(16).hex(), 21, [0]), now=20.0) == []
    assert w.stats == {
        "kept": 1, "too_large": 0, "requests": 6, "refused": 0, "replayed": 1, "unknown": 2,
        "resent": 6,
    }  # fmt: skip
    # A request made from the spec alone is answered.
    spec_made = forge.retransmit_request(bytes.fromhex(pid), len(pieces), [2, 9])
    assert w.answer(spec_made, now=21.0) == [pieces[2], pieces[9]]
    # The resent pieces complete the payload on a receiver that lost them.
    r = tw.Reassembler()
    for i, p in enumerate(pieces):
        if i not in (3, 4):
            r.add(p)
    ((_, _, count, _, missing),) = r.missing()
    resent = w.answer(rt.retransmit_request(pid, count, missing), now=21.0)
    (done,) = [x for x in map(r.add, resent) if x]
    assert done == payload


def test_window_bounds_bytes_and_age_oldest_first() -> None:
    held = [pieces_of(os.urandom(MiB), 100_000) for _ in range(4)]
    cost = 512 + sum(len(p) + 64 for p in held[0][1])  # what the window charges
    w = rt.RetransmitWindow(max_bytes=3 * cost + 1000, max_age=10.0)
    assert w.keep(*held[0], now=0.0) and w.held_bytes == cost
    for k in (1, 2):
        assert w.keep(*held[k], now=float(k))
    assert w.keep(*held[3], now=3.0)  # 4 do not fit: the oldest goes
    assert held[0][0] not in w and all(held[k][0] in w for k in (1, 2, 3))
    assert w.held_bytes == 3 * cost <= w.max_bytes
    assert w.answer(rt.retransmit_request(held[0][0], 11, [0]), now=3.0) == []
    # Age: payload 1 was kept at 1.0 and is gone at 11.0.
    pid1, pid2 = held[1][0], held[2][0]
    assert w.answer(rt.retransmit_request(pid1, 11, [0]), now=11.0) == []
    assert w.answer(rt.retransmit_request(pid2, 11, [0]), now=11.0) == [held[2][1][0]]
    assert pid1 not in w and w.held_bytes == 2 * cost
    # A payload larger than the window is not kept, and nothing is dropped for it.
    big = pieces_of(os.urandom(4 * MiB), 100_000)
    assert not w.keep(*big, now=11.5) and big[0] not in w and w.held_bytes == 2 * cost
    assert w.stats["too_large"] == 1
    for bad in [dict(max_age=0), dict(max_age=math.inf), dict(resend_interval=-1),
                dict(max_bytes=-1)]:  # fmt: skip
        with pytest.raises(tw.InputError):
            rt.RetransmitWindow(**bad)  # type: ignore[arg-type]


def test_keeping_stops_collecting_a_payload_too_large_for_the_window() -> None:
    w = rt.RetransmitWindow(max_bytes=MiB)
    chunks = tw.chunk(os.urandom(5 * MiB), 100_000)
    it = w.keeping(chunks)
    first = [next(it) for _ in range(20)]  # 2 MB yielded: no longer collected
    assert w.held_bytes == 0
    rest = list(it)
    assert len(first) + len(rest) == chunks.count and chunks.payload_id not in w
    assert w.stats["too_large"] == 1
    small = tw.chunk(os.urandom(100_000), 10_000)
    assert len(list(w.keeping(small))) == small.count
    assert small.payload_id in w
    # Streamed chunks come data first, header last: the window holds them by index.
    streamed = tw.encode_chunks({"w": np.arange(50_000, dtype=np.float32)}, 10_000)
    sent = list(w.keeping(streamed))
    assert [chunk_info(p)["index"] for p in sent] != list(range(len(sent)))
    every = rt.retransmit_request(streamed.payload_id, len(sent), list(range(len(sent))))
    assert [chunk_info(p)["index"] for p in w.answer(every)] == list(range(len(sent)))


def hostile_requests(pid: bytes, count: int, key: bytes | None) -> list[Any]:
    """Requests a window must refuse without changing or allocating anything: each is
    tagged with ``key``, so that it fails on what it says, not on its tag."""

    def req(indices: list[int], **forged: Any) -> bytes:
        return forge.retransmit_request(pid, count, indices, key=key, **forged)

    altered = bytearray(req([0]))
    altered[28:32] = (1 << 30).to_bytes(4, "little")  # the chunk's count, CRC not redone
    return [
        b"",
        b"garbage" * 10,
        os.urandom(rt.MAX_REQUEST_LEN),
        bytes(rt.MAX_REQUEST_LEN + 1),
        bytes(MiB),  # huge
        "not bytes",
        12345,
        next(tw.chunk(b"hello", 1000, key=key)),  # a chunk, not a request
        next(tw.chunk(tw.encode({"w": np.zeros(3, np.float32)}), 4000, key=key)),
        req([0, 1], magic=b"\x89TWR"),  # a container's magic
        req([0, 1], version=2),
        req([0, 1], reserved=b"\x00\x01\x00"),
        req([], n=0),  # nothing asked
        req([0, 1], n=1_000_000_000),  # a huge list claimed
        req(list(range(rt.MAX_REQUEST_INDICES + 1))),  # a list over the bound
        req([0, 1], n=3),  # the length disagrees
        req([0, 1], trailing=b"\x00"),
        req([1, 1]),  # repeated
        req([4, 2]),  # not ascending
        req([0, count]),  # out of range
        req([0, 0xFFFFFFFF]),
        bytes(altered),
        next(tw.chunk(req([0]) * 3, 200, key=key)),  # a piece of a longer one
    ]


@pytest.mark.parametrize("keyed", [False, True])
def test_hostile_requests_change_nothing_and_cost_nothing(keyed: bool) -> None:
    key = os.urandom(32) if keyed else None
    payload = os.urandom(300_000)
    pid, pieces = pieces_of(payload, key=key)
    w = rt.RetransmitWindow(key=key)
    assert w.keep(pid, pieces, now=0.0)
    before = (w.held_bytes, len(w))
    bad = hostile_requests(bytes.fromhex(pid), len(pieces), key)
    if keyed:  # well-formed, but untagged, or tagged with another key
        real = bytes.fromhex(pid), len(pieces), [0, 1, 2]
        bad += [forge.retransmit_request(*real), forge.retransmit_request(*real, key=key[::-1])]
    tracemalloc.start()
    try:
        for request in bad:
            try:
                assert w.answer(request, now=1.0) == [], request
            except tw.TensorwireError:
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10, peak  # not proportional to anything a request claims
    assert (w.held_bytes, len(w)) == before and w.stats["resent"] == 0
    assert w.stats["refused"] == len(bad) and w.stats["requests"] == 0
    # Nothing was marked resent: a genuine request right after gets every piece it names.
    genuine = rt.retransmit_request(pid, len(pieces), list(range(len(pieces))), key=key)
    assert w.answer(genuine, now=1.0) == pieces


def test_schedule_asks_repeats_resets_on_progress_and_gives_up() -> None:
    r = tw.Reassembler(timeout=60)
    pid, pieces = pieces_of(os.urandom(50_000), 10_000)  # 6 pieces
    s = rt.RetransmitRequests(r, nack_after=1.0, retries=2)
    r.add(pieces[2], now=100.0)
    assert s.due(100.5) == ([], [])  # not idle long enough
    (req,), lost = s.due(101.0)
    assert lost == [] and rt.parse_request(tw.Reassembler().add(req)) == (
        pid, len(pieces), [0, 1, 3, 4, 5]
    )  # fmt: skip
    assert s.due(101.5) == ([], [])  # asked less than nack_after ago
    assert len(s.due(102.0)[0]) == 1  # the second (last) request
    r.add(pieces[0], now=102.5)  # progress: the count starts afresh
    assert s.due(103.0) == ([], [])
    for t in (103.5, 104.5):
        (req,), _ = s.due(t)
        assert rt.parse_request(tw.Reassembler().add(req))[2] == [1, 3, 4, 5]
    assert s.due(105.0) == ([], [])
    requests, (error,) = s.due(105.5)  # two requests unanswered for nack_after: lost
    assert requests == [] and isinstance(error, tw.IntegrityError)
    assert error.chunk == (pid, 1, len(pieces)) and "lost" in str(error)
    assert s.due(106.0) == ([], [])  # reported once
    assert s.due(200.0) == ([], [])  # long past the schedule
    key = os.urandom(32)
    keyed = rt.RetransmitRequests(tw.Reassembler(key=key), nack_after=0.5, key=key)
    k_pid, k_pieces = pieces_of(os.urandom(30_000), 10_000, key=key)
    keyed.reassembler.add(k_pieces[0], now=5.0)
    (req,), _ = keyed.due(6.0)
    assert chunk_info(req)["authenticated"]
    assert rt.parse_request(tw.Reassembler(key=key).add(req))[0] == k_pid
    with pytest.raises(tw.InputError, match="timeout"):
        rt.RetransmitRequests(tw.Reassembler(timeout=5), nack_after=1.0, retries=3)
    for bad in [dict(nack_after=0), dict(nack_after=math.nan), dict(retries=-1),
                dict(retries=1.5)]:  # fmt: skip
        with pytest.raises(tw.InputError):
            rt.RetransmitRequests(r, **bad)  # type: ignore[arg-type]
