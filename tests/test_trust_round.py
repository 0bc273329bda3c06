"""Replay and enrolment in a federated round (docs/federated.md, "Enrolled clients"):
``tw.aggregate`` and ``tw.Aggregator`` with ``key``/``keys``, ``trusted_keys``,
``max_age`` and ``seen_nonces`` admit only updates from enrolled senders, one per
signer, never a nonce twice, made recently; every refusal goes through ``on_mismatch``
and changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
from test_trust import header, with_header

import tensorwire as tw
from tensorwire import fl

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
SK_A, SK_B, SK_X = (tw.generate_signing_key() for _ in range(3))
ENROLLED = [tw.public_key(SK_A), tw.public_key(SK_B)]

_rng = np.random.default_rng(2024)
BASE = {
    "w": _rng.standard_normal((6, 4)).astype(np.float32),
    "b": _rng.standard_normal(4).astype(np.float32),
}


def local(seed: int) -> dict[str, np.ndarray]:
    """A client's model after training: the base plus noise."""
    rng = np.random.default_rng(seed)
    return {k: v + 0.1 * rng.standard_normal(v.shape).astype(np.float32) for k, v in BASE.items()}


def update(seed: int, **auth: Any) -> bytes:
    return tw.encode_update(BASE, local(seed), codec="shuffle+zstd", **auth)


def aged(blob: bytes, ms: int) -> bytes:
    """A keyed payload whose authenticated creation time is moved by ``ms``: what a holder
    of KEY can make, so the core accepts it and only the round's clock can refuse it."""
    doc = header(blob)
    doc["auth"]["created"] += ms
    return with_header(blob, doc, KEY)


def same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


class Case(NamedTuple):
    options: dict[str, Any]  # the round's trust options
    accepted: list[Any]  # the updates it counts, sent first
    refused: Any  # the update it refuses, sent last
    reason: str  # a regex the reason matches

    @property
    def reading(self) -> dict[str, Any]:
        """What reading the accepted updates needs and nothing more: the key of keyed ones."""
        return {"key": KEY} if {"key", "keys"} & set(self.options) else {}


def replayed_across_rounds() -> Case:
    seen: set[bytes] = set()
    earlier = update(1, signing_key=SK_A)
    assert tw.Aggregator(base=BASE, trusted_keys=ENROLLED, seen_nonces=seen).add(earlier)
    options = {"trusted_keys": ENROLLED, "seen_nonces": seen}
    return Case(options, [update(2, signing_key=SK_B)], earlier, "nonce [0-9a-f]{32} was seen")


def replayed_in_the_round() -> Case:
    first = update(1, key=KEY)
    return Case({"key": KEY}, [first, update(2, key=KEY)], first, "nonce [0-9a-f]{32} was seen")


CASES: dict[str, Callable[[], Case]] = {
    "wrong key": lambda: Case(
        {"key": KEY}, [update(1, key=KEY), update(2, key=KEY)], update(3, key=OTHER), "key id"
    ),
    "another key under this key's id": lambda: Case(
        {"keys": {tw.key_id(KEY): KEY}},
        [update(1, key=KEY)],
        with_header(update(3, key=KEY), header(update(3, key=KEY)), OTHER),
        "MAC mismatch",
    ),
    "missing key": lambda: Case({"key": KEY}, [update(1, key=KEY)], update(3), "not authenticated"),
    "unsigned": lambda: Case(
        {"trusted_keys": ENROLLED},
        [update(1, signing_key=SK_A), update(2, signing_key=SK_B)],
        update(3),
        "not signed",
    ),
    "unknown signer": lambda: Case(
        {"trusted_keys": ENROLLED},
        [update(1, signing_key=SK_A)],
        update(3, signing_key=SK_X),
        "not among the trusted keys",
    ),
    "replayed nonce": replayed_in_the_round,
    "replayed across rounds": replayed_across_rounds,
    "second update by a signer": lambda: Case(
        {"trusted_keys": ENROLLED, "key": KEY},
        [update(1, signing_key=SK_A, key=KEY), update(2, signing_key=SK_B, key=KEY)],
        update(3, signing_key=SK_A, key=KEY),
        "signer [0-9a-f]{64} already sent an update this round",
    ),
    "too old": lambda: Case(
        {"key": KEY, "max_age": 60},
        [aged(update(1, key=KEY), -30_000), update(2, key=KEY)],
        aged(update(3, key=KEY), -7_200_000),
        r"made 7[0-9]{3}\.[0-9]+ s ago, more than max_age",
    ),
    "from the future": lambda: Case(
        {"key": KEY, "max_age": 60},
        [aged(update(1, key=KEY), 30_000)],
        aged(update(3, key=KEY), 7_200_000),
        "from now, beyond max_age",
    ),
    "unauthenticated with max_age": lambda: Case(
        {"max_age": 60},
        [update(1, signing_key=SK_A), update(2, signing_key=SK_X)],
        update(3),
        "creation time is not authenticated",
    ),
    "structure with keys": lambda: Case(
        {"key": KEY}, [update(1, key=KEY)], local(3), "tensor structure.*cannot be authenticated"
    ),
    "structure with trusted keys": lambda: Case(
        {"trusted_keys": ENROLLED},
        [update(1, signing_key=SK_A)],
        local(3),
        "tensor structure.*cannot be authenticated",
    ),
}
MODES = ["raise", "skip", "callable"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CASES)
def test_aggregate_refuses_and_counts_the_rest(name: str, mode: str) -> None:
    case = CASES[name]()
    updates, index = [*case.accepted, case.refused], len(case.accepted)
    seen = case.options.get("seen_nonces")
    seen_before = None if seen is None else set(seen)
    if mode == "raise":
        with pytest.raises(tw.AuthenticationError, match=case.reason) as info:
            tw.aggregate(updates, base=BASE, **case.options)
        assert info.value.update == index and str(info.value).startswith(f"update {index}: ")
        assert isinstance(info.value, tw.IntegrityError)
        assert seen is None or seen == seen_before
        return
    calls: list[tuple[int, str]] = []
    if mode == "skip":
        with pytest.warns(fl.MismatchWarning, match=f"update {index} skipped: .*{case.reason}"):
            result = tw.aggregate(updates, base=BASE, on_mismatch="skip", **case.options)
    else:
        result = tw.aggregate(
            updates, base=BASE, on_mismatch=lambda i, why: calls.append((i, why)), **case.options
        )
        assert [i for i, _ in calls] == [index] and re.search(case.reason, calls[0][1])
    # The refused update counts for nothing: the same bits as the accepted ones alone,
    # averaged without the round's policy.
    same_bits(result, tw.aggregate(case.accepted, base=BASE, **case.reading))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CASES)
def test_aggregator_refuses_and_keeps_its_sums(name: str, mode: str) -> None:
    case = CASES[name]()
    index = len(case.accepted)
    calls: list[tuple[int, str]] = []
    on_mismatch: Any = mode if mode != "callable" else (lambda i, why: calls.append((i, why)))
    agg = tw.Aggregator(base=BASE, on_mismatch=on_mismatch, **case.options)
    for u in case.accepted:
        assert agg.add(u)
    before = agg.result()
    seen = case.options.get("seen_nonces")
    seen_before = None if seen is None else set(seen)
    if mode == "raise":
        with pytest.raises(tw.AuthenticationError, match=case.reason) as info:
            agg.add(case.refused)
        assert info.value.update == index
    elif mode == "skip":
        with pytest.warns(fl.MismatchWarning, match=case.reason):
            assert not agg.add(case.refused)
    else:
        assert not agg.add(case.refused)
        assert [i for i, _ in calls] == [index] and re.search(case.reason, calls[0][1])
    assert [i for i, _ in agg.skipped] == [index] and re.search(case.reason, agg.skipped[0][1])
    assert agg.count == len(case.accepted) and len(agg.signers) == len(case.accepted)
    assert seen is None or seen == seen_before
    same_bits(agg.result(), before)
    plain = tw.Aggregator(base=BASE, **case.reading)
    for u in case.accepted:
        plain.add(u)
    same_bits(agg.result(), plain.result())


def test_enrolled_updates_average_like_plain_ones_and_name_their_signers() -> None:
    updates = [update(1, signing_key=SK_A), update(2, signing_key=SK_B), update(3)]
    enrolled = tw.Aggregator(base=BASE, trusted_keys=ENROLLED, on_mismatch="skip")
    with pytest.warns(fl.MismatchWarning, match="not signed"):
        for u in updates:
            enrolled.add(u)
    assert enrolled.signers == ENROLLED
    plain = tw.Aggregator(base=BASE)
    for u in updates[:2]:
        plain.add(u)
    same_bits(enrolled.result(), plain.result())
    # Public keys also given as hex, and keys= as a list.
    hexed = tw.aggregate(updates[:2], base=BASE, trusted_keys=[pk.hex() for pk in ENROLLED])
    same_bits(hexed, tw.aggregate(updates[:2], base=BASE))
    keyed = [update(4, key=KEY), update(5, key=KEY)]
    same_bits(
        tw.aggregate(keyed, base=BASE, keys=[OTHER, KEY]),
        tw.aggregate([local(4), local(5)], base=BASE),
    )


def test_unauthenticated_updates_keep_working_where_no_key_is_required() -> None:
    seen: set[bytes] = set()
    signed = update(2, signing_key=SK_X)  # signed by anyone: its signature is still checked
    updates = [update(1), signed, local(3)]
    result = tw.aggregate(updates, base=BASE, seen_nonces=seen)
    same_bits(result, tw.aggregate(updates, base=BASE))
    assert seen == {tw._core.Payload(signed).nonce}  # a plain payload's nonce is nobody's
    agg = tw.Aggregator(base=BASE, seen_nonces=set())
    assert all(agg.add(u) for u in updates)
    assert agg.signers == [None, tw.public_key(SK_X), None]


def test_a_plain_payloads_nonce_and_time_are_nobodys() -> None:
    """Anyone can write an auth object with a copied nonce into a plain payload: it must
    neither block the authentic update nor pass as recent."""
    signed = update(2, signing_key=SK_A)
    doc = header(update(1))
    doc["auth"] = {k: header(signed)["auth"][k] for k in ("created", "nonce")}
    squatter = with_header(update(1), doc)
    assert tw._core.Payload(squatter).nonce == tw._core.Payload(signed).nonce
    seen: set[bytes] = set()
    same_bits(
        tw.aggregate([squatter, signed], base=BASE, seen_nonces=seen),
        tw.aggregate([update(1), signed], base=BASE),
    )
    assert seen == {tw._core.Payload(signed).nonce}
    agg = tw.Aggregator(base=BASE, max_age=60, on_mismatch="skip")
    with pytest.warns(fl.MismatchWarning, match="creation time is not authenticated"):
        assert not agg.add(squatter)
    assert agg.add(signed)


def test_seen_nonces_receive_only_accepted_updates() -> None:
    nan = local(9)
    nan["w"][0, 0] = np.nan
    good = [update(1, signing_key=SK_A), update(2, signing_key=SK_B)]
    bad = tw.encode_update(BASE, nan, signing_key=SK_X)  # refused by the core: a NaN
    nonces = [tw._core.Payload(u).nonce for u in good]

    seen: set[bytes] = set()
    with pytest.warns(fl.MismatchWarning, match="NaN"):
        tw.aggregate([good[0], bad, good[1]], base=BASE, on_mismatch="skip", seen_nonces=seen)
    assert seen == set(nonces)

    seen = set()
    with pytest.raises(fl.MismatchError, match="NaN"):
        tw.aggregate([*good, bad], base=BASE, seen_nonces=seen)
    assert seen == set()  # the call raised: no update of it was accepted

    seen = set()
    agg = tw.Aggregator(base=BASE, on_mismatch="skip", seen_nonces=seen)
    assert agg.add(good[0])
    with pytest.warns(fl.MismatchWarning, match="NaN"):
        assert not agg.add(bad)
    assert seen == {nonces[0]}
    # The next round refuses the replay of an accepted update, not the refused one.
    later = tw.Aggregator(base=BASE, on_mismatch="skip", seen_nonces=seen)
    with pytest.warns(fl.MismatchWarning, match="was seen before"):
        assert not later.add(good[0])
    assert later.add(good[1])


def test_in_one_call_a_signer_counts_once_its_update_is_admitted() -> None:
    # A refused first update (another round) does not use up its signer's turn.
    other_round = tw.encode_update(BASE, local(1), round=2, signing_key=SK_A)
    this_round = tw.encode_update(BASE, local(2), round=1, signing_key=SK_A)
    reasons: list[tuple[int, str]] = []
    result = tw.aggregate(
        [other_round, this_round],
        base=BASE,
        round=1,
        trusted_keys=ENROLLED,
        on_mismatch=lambda i, why: reasons.append((i, why)),
    )
    assert [i for i, _ in reasons] == [0]
    same_bits(result, tw.aggregate([this_round], base=BASE))


def test_bad_trust_options() -> None:
    u = [update(1, key=KEY)]
    for bad in (0, -1, float("nan"), float("inf"), "60", True):
        with pytest.raises(tw.InputError, match="max_age"):
            tw.aggregate(u, base=BASE, key=KEY, max_age=bad)
        with pytest.raises(tw.InputError, match="max_age"):
            tw.Aggregator(base=BASE, key=KEY, max_age=bad)
    with pytest.raises(tw.InputError, match="seen_nonces"):
        tw.aggregate(u, base=BASE, key=KEY, seen_nonces=[])
    with pytest.raises(tw.InputError, match="trusted_keys"):
        tw.Aggregator(trusted_keys=ENROLLED[0])
    with pytest.raises(tw.InputError, match="key"):
        tw.aggregate(u, base=BASE, key="not bytes")


def test_encode_update_authenticates_and_signs() -> None:
    fb = fl.ErrorFeedback()
    p = tw.encode_update(
        BASE, local(1), codec="topk:0.5", key=KEY, signing_key=SK_A, error_feedback=fb
    )
    assert fb.residual  # the sent payload was decoded (with the key) for the residual
    with pytest.raises(tw.AuthenticationError, match="pass key="):
        tw.decode(p)
    with tw.open(p, key=KEY, trusted_keys=ENROLLED) as r:
        assert r.signer == tw.public_key(SK_A)
    delta = tw.encode_update(BASE, local(2), codec="delta+zstd", key=KEY)
    same_bits(
        tw.aggregate([delta], base=BASE, key=KEY),
        tw.aggregate([tw.encode_update(BASE, local(2), codec="delta+zstd")], base=BASE),
    )
