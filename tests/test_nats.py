"""End to end through a real nats-server (the ``nats_url`` fixture: one started on a free
loopback port, stopped after): payloads far above the server's 1 MiB message limit, in
chunks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorwire as tw

nats = pytest.importorskip("nats")
import nats_server  # noqa: E402

from tensorwire.transport import nats as twnats  # noqa: E402

MiB = 1 << 20


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


def test_20_mb_payload_through_the_1_mb_limit(nats_url: str) -> None:
    payload = np.random.default_rng(0).bytes(24 * MiB + 12345)

    async def main() -> bytes:
        sender = await nats.connect(nats_url)
        receiver = await nats.connect(nats_url)
        try:
            assert sender.max_payload == MiB  # the server's default limit is in force
            with pytest.raises(nats.errors.MaxPayloadError):
                await sender.publish("too.big", payload[: 2 * MiB])
            sub = await twnats.subscribe(receiver, "blobs")
            await twnats.publish(sender, "blobs", payload)
            return await sub.next_payload(timeout=60)
        finally:
            await sender.close()
            await receiver.close()

    assert run(main()) == payload


def test_streamed_model_from_several_senders(nats_url: str) -> None:
    rng = np.random.default_rng(1)
    models = [
        {f"layer{i}.weight": rng.standard_normal((256, 1024), np.float32) for i in range(20)}
        for _ in range(3)
    ]  # 20 MiB each

    async def main() -> list[bytes]:
        receiver = await nats.connect(nats_url)
        senders = [await nats.connect(nats_url) for _ in models]
        try:
            sub = await twnats.subscribe(receiver, "updates")
            await asyncio.gather(
                *(
                    twnats.publish_tensors(nc, "updates", m, metadata={"client": i})
                    for i, (nc, m) in enumerate(zip(senders, models))
                )
            )
            return [await sub.next_payload(timeout=60) for _ in models]
        finally:
            for nc in [receiver, *senders]:
                await nc.close()

    blobs = run(main())
    by_client = {tw.open(b).metadata["client"]: b for b in blobs}
    assert sorted(by_client) == [0, 1, 2]
    for i, m in enumerate(models):
        assert by_client[i] == tw.encode(m, metadata={"client": i})
        np.testing.assert_array_equal(tw.decode(by_client[i])["layer7.weight"], m["layer7.weight"])


def test_bad_messages_do_not_stop_the_subscription(nats_url: str) -> None:
    payload = bytes(range(256)) * 10_000
    errors: list[tw.TensorwireError] = []

    async def main() -> bytes:
        nc = await nats.connect(nats_url)
        try:
            sub = await twnats.subscribe(nc, "mixed", on_error=lambda e, msg: errors.append(e))
            await nc.publish("mixed", b"not a chunk")
            pieces = list(tw.chunk(payload, 100_000))
            corrupt = bytearray(pieces[0])
            corrupt[-1] ^= 1
            await nc.publish("mixed", bytes(corrupt))
            for piece in pieces:
                await nc.publish("mixed", piece)
            return await sub.next_payload(timeout=30)
        finally:
            await nc.close()

    assert run(main()) == payload
    assert [type(e) for e in errors] == [tw.FormatError, tw.IntegrityError]


def test_a_first_piece_that_cannot_be_allocated_does_not_stop_the_subscription(
    nats_url: str,
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import forge

    payload = bytes(range(256)) * 1000
    # A forged first piece of a payload of 100 GiB (valid CRC), which a receiver that
    # allows it (max_payload_bytes) cannot allocate: an error, and the next payload lands.
    forged = forge.chunk(
        b"x" * 100, payload_id=os.urandom(16), index=0, count=1 << 30, total=100 << 30,
        offset=0, kind=0,
    )  # fmt: skip
    errors: list[tw.TensorwireError] = []

    async def main() -> bytes:
        nc = await nats.connect(nats_url)
        try:
            r = tw.Reassembler(max_payload_bytes=1 << 62, max_pending_bytes=1 << 62)
            sub = await twnats.subscribe(
                nc, "huge", reassembler=r, on_error=lambda e, msg: errors.append(e)
            )
            await nc.publish("huge", forged)
            for piece in tw.chunk(payload, 100_000):
                await nc.publish("huge", piece)
            return await sub.next_payload(timeout=30)
        finally:
            await nc.close()

    assert run(main()) == payload
    assert [type(e) for e in errors] == [tw.FormatError], errors
    assert "cannot allocate" in str(errors[0])


def test_max_bytes_above_the_server_limit_is_refused(nats_url: str) -> None:
    async def main() -> None:
        nc = await nats.connect(nats_url)
        try:
            with pytest.raises(tw.InputError, match="max_payload"):
                await twnats.publish(nc, "x", b"abc", max_bytes=2 * MiB)
        finally:
            await nc.close()

    run(main())


def test_local_server_with_a_smaller_limit() -> None:
    nats_server.require_server_binary()
    payload = os.urandom(300_000)

    async def main(url: str) -> bytes:
        nc = await nats.connect(url)
        try:
            assert nc.max_payload == 64 * 1024
            sub = await twnats.subscribe(nc, "small")
            await twnats.publish(nc, "small", payload)
            return await sub.next_payload(timeout=30)
        finally:
            await nc.close()

    with nats_server.local_server(max_payload=64 * 1024) as url:
        assert run(main(url)) == payload


def test_broker_rounds_example(nats_url: str) -> None:
    example = Path(__file__).parent.parent / "examples" / "broker_rounds.py"
    args = [sys.executable, str(example), "--url", nats_url, "--clients", "3", "--rounds", "2"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "identical to the same rounds run without a broker" in done.stdout


def test_a_payload_completed_during_a_timeout_is_not_lost() -> None:
    class Msg:
        data = bytes(1 << 20)
        subject = "s"

    class Sub:
        async def _gen(self) -> Any:
            yield Msg()
            await asyncio.sleep(3600)

        @property
        def messages(self) -> Any:
            return self._gen()

    class SlowReassembler:
        def add(self, data: bytes) -> bytes:
            import time

            time.sleep(0.5)  # a big chunk being copied and verified on a worker thread
            return b"the payload"

    async def main() -> bytes:
        sub = twnats.PayloadSubscription(Sub(), SlowReassembler(), lambda e, m: None)  # type: ignore[arg-type]
        with pytest.raises(asyncio.TimeoutError):
            await sub.next_payload(timeout=0.05)
        return await sub.next_payload(timeout=5)

    assert run(main()) == b"the payload"


def test_keyed_chunks_end_to_end_and_forgers_cost_nothing(nats_url: str) -> None:
    key, other = os.urandom(32), os.urandom(32)
    payload = np.random.default_rng(2).bytes(3 * MiB + 7)
    model = {"w": np.arange(300_000, dtype=np.float32)}
    pid = b"shared-payloadid"
    errors: list[tw.TensorwireError] = []

    async def main() -> list[bytes]:
        sender, forger, receiver = [await nats.connect(nats_url) for _ in range(3)]
        try:
            sub = await twnats.subscribe(
                receiver, "keyed", key=key, on_error=lambda e, msg: errors.append(e)
            )
            assert sub.reassembler.key_ids == tw.Reassembler(key=key).key_ids
            with pytest.raises(tw.InputError, match="not both"):
                await twnats.subscribe(receiver, "x", key=key, reassembler=tw.Reassembler())
            # A forger who knows the payload id: other bodies, with another key or none.
            fake = bytes(len(payload))
            await twnats.publish(forger, "keyed", fake, payload_id=pid, key=other)
            await twnats.publish(forger, "keyed", fake, payload_id=pid)
            await twnats.publish(sender, "keyed", payload, payload_id=pid, key=key)
            await twnats.publish_tensors(sender, "keyed", model, key=key, codec="zstd")
            await twnats.publish_tensors(forger, "keyed", model)  # unkeyed: dropped
            return [await sub.next_payload(timeout=60) for _ in range(2)]
        finally:
            for nc in (sender, forger, receiver):
                await nc.close()

    got = run(main())
    assert got[0] == payload
    # publish_tensors with a key authenticates the payload itself, not only its chunks.
    with tw.open(got[1], key=key) as r:
        assert r.key_id == tw.key_id(key) and r.signer is None
        np.testing.assert_array_equal(r["w"], model["w"])
    with pytest.raises(tw.AuthenticationError, match="pass key= or keys="):
        tw.decode(got[1])
    assert errors and all(isinstance(e, tw.AuthenticationError) for e in errors)


def test_keyed_and_signed_payloads_are_checked_before_they_are_handed_out(
    nats_url: str,
) -> None:
    key, other = os.urandom(32), os.urandom(32)
    sk, stranger = tw.generate_signing_key(), tw.generate_signing_key()
    pk = tw.public_key(sk)
    model = {"w": np.arange(400_000, dtype=np.float32), "b": np.ones(3, np.int8)}
    errors: list[tw.TensorwireError] = []

    async def main() -> list[bytes]:
        sender, forger, receiver = [await nats.connect(nats_url) for _ in range(3)]
        try:
            keyed = await twnats.subscribe(
                receiver, "both", keys=[other, key], trusted_keys=[pk],
                on_error=lambda e, msg: errors.append(e),
            )  # fmt: skip
            signed_only = await twnats.subscribe(
                receiver, "signed", trusted_keys=[pk.hex()],
                on_error=lambda e, msg: errors.append(e),
            )  # fmt: skip
            assert keyed.reassembler.trusted_keys == [pk] == signed_only.reassembler.trusted_keys
            with pytest.raises(tw.InputError, match="trusted_keys= or reassembler="):
                await twnats.subscribe(
                    receiver, "x", trusted_keys=[pk], reassembler=tw.Reassembler()
                )
            # Refused: signed by a stranger; keyed but unsigned; not signed at all.
            await twnats.publish_tensors(forger, "both", model, key=key, signing_key=stranger)
            await twnats.publish_tensors(forger, "both", model, key=key)
            await twnats.publish_tensors(forger, "signed", model)
            await twnats.publish_tensors(forger, "signed", model, signing_key=stranger)
            # Then the genuine ones.
            await twnats.publish_tensors(
                sender, "both", model, key=key, signing_key=sk, codec="shuffle+zstd",
                metadata={"round": 3}, max_bytes=64 << 10,
            )  # fmt: skip
            await twnats.publish_tensors(sender, "signed", model, signing_key=sk)
            return [
                await keyed.next_payload(timeout=60),
                await signed_only.next_payload(timeout=60),
            ]
        finally:
            for nc in (sender, forger, receiver):
                await nc.close()

    both, signed = run(main())
    with tw.open(both, key=key, trusted_keys=[pk]) as r:
        assert (r.signer, r.key_id, r.metadata) == (pk, tw.key_id(key), {"round": 3})
        np.testing.assert_array_equal(r["w"], model["w"])
    assert both[12:14] == b"\x01\x01" and signed[12:14] == b"\x00\x01"
    assert tw.open(signed, trusted_keys=[pk]).signer == pk
    assert len(errors) == 4 and all(isinstance(e, tw.AuthenticationError) for e in errors)
    said = " | ".join(map(str, errors))
    assert "not among the trusted keys" in said and "not signed" in said, said
