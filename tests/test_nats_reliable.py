"""Reliable delivery over core NATS (at most once) through a real nats-server: a relay
that drops, duplicates and reorders pieces sits between sender and receiver, and the
receiver's retransmit requests get every payload through, bit-exact; what the sender no
longer holds is reported lost; forged requests change nothing."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

import tensorwire as tw
from tensorwire.chunking import chunk_info

nats = pytest.importorskip("nats")
import forge  # noqa: E402
from test_retransmit import hostile_requests  # noqa: E402

from tensorwire.transport import nats as twnats  # noqa: E402
from tensorwire.transport import retransmit as rt  # noqa: E402

MiB = 1 << 20
NACK = 0.25  # seconds without a new piece before a receiver asks


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


class LossyRelay:
    """Forwards the pieces published on ``src`` to ``dst``, and the retransmit requests
    of ``dst``'s subscribers back to ``src``'s sender, losing some on the way.

    Whether the ``nth`` copy of a piece is dropped, duplicated, held back (released
    later, in reverse order: reordering) or passed is a function of the seed, the
    payload id and ``(index, nth)`` alone, so what it drops is the same on every run;
    ``always_drop`` lists (payload id, index) whose first copy is dropped, and the first
    ``drop_requests`` requests are dropped too. Third copies always pass."""

    def __init__(
        self, nc: Any, src: str, dst: str, *, seed: int, drop: float = 0.0,
        redrop: float = 0.0, dup: float = 0.0, hold: float = 0.0,
        always_drop: frozenset[tuple[str, int]] = frozenset(), drop_requests: int = 0,
    ) -> None:  # fmt: skip
        self.nc, self.src, self.dst, self.seed = nc, src, dst, seed
        self.drop, self.redrop, self.dup, self.hold = drop, redrop, dup, hold
        self.always_drop, self.drop_requests = always_drop, drop_requests
        self.seen: Counter[tuple[str, int]] = Counter()
        self.fates: Counter[str] = Counter()
        self.dropped: set[tuple[str, int, int]] = set()
        self.requests = 0
        self._held: list[bytes] = []
        self._subs: list[Any] = []
        self._flusher: asyncio.Task[None] | None = None

    def fate(self, pid: str, index: int, nth: int) -> str:
        if nth == 0 and (pid, index) in self.always_drop:
            return "drop"
        if nth >= 2:
            return "pass"
        rng = random.Random(f"{self.seed}/{pid}/{index}/{nth}")
        lose, other = rng.random(), rng.random()
        if lose < (self.drop if nth == 0 else self.redrop):
            return "drop"
        if other < self.dup:
            return "dup"
        return "hold" if other < self.dup + self.hold else "pass"

    async def start(self) -> None:
        self._subs = [
            await self.nc.subscribe(self.src, cb=self._piece),
            await self.nc.subscribe(twnats.request_subject(self.dst), cb=self._request),
        ]
        self._flusher = asyncio.ensure_future(self._flush_every(0.03))
        await self.nc.flush()

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        for sub in self._subs:
            await sub.unsubscribe()

    async def _piece(self, msg: Any) -> None:
        info = chunk_info(msg.data)
        where = (info["payload_id"], info["index"])
        nth = self.seen[where]
        self.seen[where] += 1
        fate = self.fate(*where, nth)
        self.fates[fate] += 1
        if fate == "drop":
            self.dropped.add((*where, nth))
        elif fate == "hold":
            self._held.append(msg.data)
            if len(self._held) >= 3:
                await self._release()
        else:
            for _ in range(2 if fate == "dup" else 1):
                await self.nc.publish(self.dst, msg.data)

    async def _release(self) -> None:
        held, self._held = self._held, []
        for data in reversed(held):
            await self.nc.publish(self.dst, data)

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._release()

    async def _request(self, msg: Any) -> None:
        self.requests += 1
        if self.requests > self.drop_requests:
            await self.nc.publish(twnats.request_subject(self.src), msg.data)

    def expected_drops(self, pid: str, count: int) -> set[tuple[str, int, int]]:
        """What it drops of a payload of ``count`` pieces, from the seed alone: a first
        copy lost, then its resent copy lost again (a copy is only resent once lost)."""
        out = set()
        for i in range(count):
            for nth in range(2):
                if self.fate(pid, i, nth) != "drop":
                    break
                out.add((pid, i, nth))
        return out


async def connect(url: str, n: int) -> list[Any]:
    return [await nats.connect(url) for _ in range(n)]


async def until(done: Any, seconds: float = 5.0) -> None:
    """Wait until ``done()`` holds, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_lossy_relay_payloads_arrive_complete_and_bit_exact(nats_url: str) -> None:
    rng = np.random.default_rng(3)
    blob = rng.bytes(24 * MiB + 4321)
    model = {f"layer{i}": rng.standard_normal((512, 512), np.float32) for i in range(20)}
    pids = [bytes([1]) * 16, bytes([2]) * 16]
    errors: list[tw.TensorwireError] = []

    async def main() -> tuple[list[bytes], LossyRelay, rt.RetransmitWindow, tw.Reassembler]:
        sender, receiver, relay_nc = await connect(nats_url, 3)
        relay = LossyRelay(
            relay_nc, "lossy.in", "lossy.out", seed=11, drop=0.2, redrop=0.4, dup=0.15,
            hold=0.2, drop_requests=2,
            always_drop=frozenset({(pids[0].hex(), 0), (pids[0].hex(), 24)}),  # first, last
        )  # fmt: skip
        try:
            await relay.start()
            server = await twnats.serve_retransmits(sender, "lossy.in")
            sub = await twnats.subscribe(
                receiver, "lossy.out", retransmit=True, nack_after=NACK,
                on_error=lambda e, msg: errors.append(e),
            )  # fmt: skip
            await twnats.publish(sender, "lossy.in", blob, payload_id=pids[0], retransmit=server)
            await twnats.publish_tensors(
                sender, "lossy.in", model, codec="shuffle+zstd", payload_id=pids[1],
                retransmit=server,
            )  # fmt: skip
            got = [await sub.next_payload(timeout=20) for _ in pids]
            await relay.stop()
            return got, relay, server.window, sub.reassembler
        finally:
            for nc in (sender, receiver, relay_nc):
                await nc.close()

    start = time.monotonic()
    (got_blob, got_model), relay, window, r = run(main())
    assert got_blob == blob
    decoded = tw.decode(got_model)
    assert all(np.array_equal(decoded[k], v) for k, v in model.items())
    counts = [-(-len(b) // (MiB - 88)) for b in (blob, got_model)]  # pieces of each
    expected = set().union(*(relay.expected_drops(p.hex(), n) for p, n in zip(pids, counts)))
    assert relay.dropped == expected and len(expected) >= 8, (relay.dropped, relay.fates)
    assert any(nth == 1 for _, _, nth in relay.dropped)  # some resent pieces lost again
    assert relay.fates["dup"] > 0 and relay.fates["hold"] > 0
    assert window.stats["resent"] >= len(expected) and window.stats["refused"] == 0
    assert relay.requests > 2  # the first two were dropped, and asked again
    assert errors == [] and r.pending() == [] and r.stats["duplicates"] >= relay.fates["dup"]
    assert time.monotonic() - start < 25


def test_keyed_requests_through_the_relay(nats_url: str) -> None:
    key = os.urandom(32)
    blob = np.random.default_rng(4).bytes(21 * MiB)
    refused: list[tw.TensorwireError] = []

    async def main() -> tuple[bytes, rt.RetransmitWindow]:
        sender, receiver, relay_nc, stranger = await connect(nats_url, 4)
        relay = LossyRelay(relay_nc, "k.in", "k.out", seed=5, drop=0.3, redrop=0.3)
        try:
            await relay.start()
            server = await twnats.serve_retransmits(
                sender, "k.in", key=key, on_error=lambda e, msg: refused.append(e)
            )
            assert server.window.key_ids == [tw.key_id(key)]
            sub = await twnats.subscribe(receiver, "k.out", key=key, retransmit=True,
                                         nack_after=NACK)  # fmt: skip
            pid = await twnats.publish(sender, "k.in", blob, key=key, retransmit=server)
            # A stranger asks for the same pieces without the key: refused.
            unkeyed = rt.retransmit_request(pid, 22, list(range(22)))
            await stranger.publish(server.request_subject, unkeyed)
            got = await sub.next_payload(timeout=20)
            await relay.stop()
            return got, server.window
        finally:
            for nc in (sender, receiver, relay_nc, stranger):
                await nc.close()

    got, window = run(main())
    assert got == blob
    assert window.stats["resent"] >= 1 and window.stats["refused"] == 1
    assert [type(e) for e in refused] == [tw.AuthenticationError]


def test_a_payload_beyond_the_window_is_reported_lost_not_hung(nats_url: str) -> None:
    big, small, after = (np.random.default_rng(6).bytes(n) for n in (20 * MiB, 3 * MiB, MiB))
    pid_big, pid_small = os.urandom(16), os.urandom(16)
    errors: list[tw.TensorwireError] = []
    retries = 3

    async def main() -> tuple[list[bytes], float, rt.RetransmitWindow, tw.Reassembler]:
        sender, receiver, relay_nc = await connect(nats_url, 3)
        lose = frozenset({(pid_big.hex(), 1), (pid_small.hex(), 1)})
        relay = LossyRelay(relay_nc, "w.in", "w.out", seed=0, always_drop=lose)
        try:
            await relay.start()
            window = rt.RetransmitWindow(max_bytes=8 * MiB)  # holds the small one only
            server = await twnats.serve_retransmits(sender, "w.in", window=window)
            sub = await twnats.subscribe(
                receiver, "w.out", retransmit=True, nack_after=NACK, retries=retries,
                on_error=lambda e, msg: errors.append(e),
            )  # fmt: skip
            for blob, pid in ((big, pid_big), (small, pid_small)):
                await twnats.publish(sender, "w.in", blob, payload_id=pid, retransmit=server)
            got = [await sub.next_payload(timeout=10)]  # the small one, its piece resent
            start = time.monotonic()
            while not errors and time.monotonic() - start < 10:
                with pytest.raises(asyncio.TimeoutError):
                    await sub.next_payload(timeout=0.2)
            lost_after = time.monotonic() - start
            await twnats.publish(sender, "w.in", after, retransmit=server)
            got.append(await sub.next_payload(timeout=10))  # the subscription goes on
            await relay.stop()
            return got, lost_after, window, sub.reassembler
        finally:
            for nc in (sender, receiver, relay_nc):
                await nc.close()

    got, lost_after, window, r = run(main())
    assert got == [small, after]
    (error,) = errors
    assert isinstance(error, tw.IntegrityError) and "lost" in str(error)
    assert error.chunk == (pid_big.hex(), 1, 21)
    assert lost_after < (retries + 2) * NACK + 1.0
    assert window.stats["too_large"] == 1 and window.stats["unknown"] == retries
    assert pid_big.hex() not in window and pid_small.hex() in window
    # Given up, not dropped yet: the reassembler's timeout drops it, as without retransmits.
    assert [p[0] for p in r.pending()] == [pid_big.hex()]


def test_forged_requests_over_nats_change_nothing_and_cost_nothing(nats_url: str) -> None:
    key = os.urandom(32)
    payload = np.random.default_rng(8).bytes(5 * MiB)
    refused: list[tw.TensorwireError] = []
    seen: list[bytes] = []

    async def main() -> tuple[int, int, rt.RetransmitWindow]:
        sender, stranger, watcher = await connect(nats_url, 3)
        try:
            server = await twnats.serve_retransmits(
                sender, "f.data", key=key, on_error=lambda e, msg: refused.append(e)
            )

            async def watch(msg: Any) -> None:
                seen.append(msg.data)

            await watcher.subscribe("f.data", cb=watch)
            await watcher.flush()
            pid = await twnats.publish(sender, "f.data", payload, key=key, retransmit=server)
            held = server.window.held_bytes
            count = -(-len(payload) // (MiB - 104))
            await until(lambda: len(seen) == count)  # what was published, once
            seen.clear()
            bad = [b for b in hostile_requests(bytes.fromhex(pid), count, key) if
                   isinstance(b, bytes)]  # fmt: skip
            bad += [
                forge.retransmit_request(bytes.fromhex(pid), count, [0, 1]),  # no tag
                forge.retransmit_request(os.urandom(16), count, [0], key=key),
            ]  # unknown
            for request in bad:
                await stranger.publish(server.request_subject, request)
            await stranger.flush()
            await asyncio.sleep(0.5)
            assert [chunk_info(p)["index"] for p in seen] == [], (refused, server.window.stats)
            assert server.window.held_bytes == held
            n_bad = len(bad)
            # A genuine request is answered with exactly what it names: the test could fail.
            genuine = rt.retransmit_request(pid, count, [0, count - 1], key=key)
            await stranger.publish(server.request_subject, genuine)
            await stranger.flush()
            await until(lambda: len(seen) == 2)
            return n_bad, count, server.window
        finally:
            for nc in (sender, stranger, watcher):
                await nc.close()

    n_bad, count, window = run(main())
    assert [chunk_info(p)["index"] for p in seen] == [0, count - 1]
    assert window.stats["refused"] == n_bad - 1 == len(refused)  # all but the unknown id
    assert window.stats["unknown"] == 1 and window.stats["resent"] == 2


def test_retransmit_arguments_are_checked(nats_url: str) -> None:
    key = os.urandom(32)

    async def main() -> None:
        (nc,) = await connect(nats_url, 1)
        try:
            assert twnats.request_subject("a.b") == "_tw.retransmit.a.b"
            for wild in ("a.*", "a.>", ""):
                with pytest.raises(tw.InputError, match="literal subject"):
                    await twnats.subscribe(nc, wild, retransmit=True)
            sub = await twnats.subscribe(nc, "a.*", retransmit=True, request_subject="req.a")
            assert sub.requests is not None and sub.requests.nack_after == 1.0
            with pytest.raises(tw.InputError, match="pass one key="):
                await twnats.subscribe(nc, "a", keys=[key], retransmit=True)
            with pytest.raises(tw.InputError, match="pass one key="):
                await twnats.subscribe(
                    nc, "a", reassembler=tw.Reassembler(key=key), retransmit=True
                )
            with pytest.raises(tw.InputError, match="timeout"):
                await twnats.subscribe(
                    nc, "a", reassembler=tw.Reassembler(timeout=3), retransmit=True
                )
            with pytest.raises(tw.InputError, match="not both"):
                await twnats.serve_retransmits(nc, "a", window=rt.RetransmitWindow(), key=key)
            server = await twnats.serve_retransmits(nc, "a")
            with pytest.raises(tw.InputError, match="serves 'a'"):
                await twnats.publish(nc, "b", b"x", retransmit=server)
            await server.stop()
            await sub.unsubscribe()
        finally:
            await nc.close()

    run(main())
