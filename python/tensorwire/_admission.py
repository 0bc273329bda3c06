"""Who a federated round admits: updates authenticated with one of the server's keys or
signed by an enrolled client, at most one per signer, never with a nonce seen before,
made recently (docs/federated.md, "Enrolled clients").

The Rust core does the cryptography: ``_core.Payload(..., keys=, trusted_keys=)`` checks
the keyed header hash and the signature and refuses what it cannot establish. What is
left here is the round's policy over what the core established: the signer, the nonce
and the creation time of each update.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, MutableSet
from typing import Any, Optional

from . import _core
from ._errors import AuthenticationError, InputError
from ._trust import Keys, reader_keys, trusted

__all__ = ["Admission", "authentication_error", "parse_payload"]


def _max_age_ms(max_age: Any) -> Optional[float]:
    """``max_age=`` (seconds) in milliseconds, the unit of ``created``."""
    if max_age is None:
        return None
    if (
        isinstance(max_age, bool)
        or not isinstance(max_age, (int, float))
        or not (math.isfinite(max_age) and max_age > 0)
    ):
        raise InputError(f"max_age must be a positive number of seconds, got {max_age!r}")
    return float(max_age) * 1000.0


def _unplaced(error: AuthenticationError, index: int) -> str:
    """The reason of the core's refusal of update ``index``, without the place its
    message starts with (``update 3: ``)."""
    return str(error).removeprefix(f"update {index}: ")


def _authenticated(payload: Any) -> bool:
    """Whether the core checked who made ``payload`` (a key or a signature)."""
    return payload.key_id is not None or payload.signer is not None


def _nonce(payload: Any) -> Optional[bytes]:
    """The nonce of an authenticated payload, or None (a plain one's is anyone's)."""
    return payload.nonce if _authenticated(payload) else None


def parse_payload(
    index: Optional[int],
    update: Any,
    keys: Optional[list[tuple[Optional[str], bytes]]],
    trusted_keys: Optional[list[bytes]],
) -> tuple[Any, Optional[str]]:
    """Parse payload ``index`` (None: not an update) accepting only ``keys`` and
    ``trusted_keys`` (as ``_trust.reader_keys`` and ``_trust.trusted`` make them):
    ``(payload, None)``, or ``(None, reason)`` when the core refuses its authentication.
    Other errors (a malformed or truncated payload) raise, naming the update."""
    try:
        payload = _core.Payload(update, update=index, keys=keys, trusted_keys=trusted_keys)
        return payload, None
    except AuthenticationError as e:
        return None, str(e) if index is None else _unplaced(e, index)


class Admission:
    """The admission policy of one round (one ``aggregate`` call or one ``Aggregator``).

    ``key``/``keys``: admit only payloads authenticated with one of these keys;
    ``trusted_keys``: only payloads signed by one of these public keys, and at most one
    update per signer; ``max_age`` (seconds): only payloads whose authenticated
    ``created`` time is within ``max_age`` of the server's clock, either way;
    ``seen_nonces``: a set of nonces (16-byte ``bytes``) the server keeps across rounds.
    Whatever the options, no two updates of the round carry the same nonce. Nonces and
    creation times count only where they are authenticated (keyed or signed payloads):
    anyone can write them into a plain payload.
    """

    def __init__(
        self,
        *,
        key: Any = None,
        keys: Optional[Keys] = None,
        trusted_keys: Optional[Iterable[Any]] = None,
        max_age: Optional[float] = None,
        seen_nonces: Optional[MutableSet[bytes]] = None,
    ) -> None:
        if seen_nonces is not None and not isinstance(seen_nonces, MutableSet):
            raise InputError(
                f"seen_nonces must be a set the server keeps, not {type(seen_nonces).__name__}"
            )
        self._keys = reader_keys(key, keys)
        self._trusted = trusted(trusted_keys)
        self._max_age_ms = _max_age_ms(max_age)
        self._seen_nonces = seen_nonces
        self._nonces: set[bytes] = set()  # this round's
        self._signers: set[bytes] = set()  # this round's

    @property
    def _authenticated_only(self) -> bool:
        return self._keys is not None or self._trusted is not None

    def parse(self, index: int, update: Any) -> tuple[Any, Optional[str]]:
        """Parse payload ``index`` with the round's keys and trusted signers (see
        :func:`parse_payload`)."""
        return parse_payload(index, update, self._keys, self._trusted)

    def refusal(self, payload: Any) -> Optional[str]:
        """Why the round refuses a parsed payload (or, given None, a tensor structure)
        for who sent it or when, or None when it is admitted."""
        if payload is None:
            if self._authenticated_only or self._max_age_ms is not None:
                return (
                    "it is a tensor structure, not a payload: it cannot be authenticated "
                    "(the round takes only authenticated updates)"
                )
            return None
        nonce, signer = _nonce(payload), payload.signer
        if nonce is not None and (nonce in self._nonces or self._seen(nonce)):
            return f"its nonce {nonce.hex()} was seen before: a replay"
        if self._trusted is not None and signer in self._signers:
            return f"signer {signer.hex()} already sent an update this round"
        return self._age_refusal(payload)

    def _seen(self, nonce: bytes) -> bool:
        return self._seen_nonces is not None and nonce in self._seen_nonces

    def _age_refusal(self, payload: Any) -> Optional[str]:
        if self._max_age_ms is None:
            return None
        if not _authenticated(payload):
            return "max_age is set and its creation time is not authenticated"
        created = payload.created
        now = time.time() * 1000.0
        if created < now - self._max_age_ms:
            return f"it was made {(now - created) / 1000:.3f} s ago, more than max_age"
        if created > now + self._max_age_ms:
            return f"it claims to be made {(created - now) / 1000:.3f} s from now, beyond max_age"
        return None

    def claim(self, payload: Any) -> None:
        """Count ``payload``'s nonce and signer as used in this round."""
        if payload is None:
            return
        nonce = _nonce(payload)
        if nonce is not None:
            self._nonces.add(nonce)
        if payload.signer is not None:
            self._signers.add(payload.signer)

    @property
    def nonces(self) -> list[bytes]:
        """The nonces of the authenticated updates this round counts."""
        return sorted(self._nonces)

    def partial_refusal(
        self, count: int, signers: list[bytes], nonces: list[bytes]
    ) -> Optional[str]:
        """Why the round refuses a partial aggregate of ``count`` updates, whose signed
        ones were signed by ``signers`` and whose authenticated ones carry ``nonces``, or
        None. The round's rules apply to what the partial declares (the server that
        made it checked the signatures): no nonce seen before; with ``trusted_keys``,
        every update signed by an enrolled key, one per signer; with keys or
        ``max_age``, every update authenticated."""
        for nonce in nonces:
            if nonce in self._nonces or self._seen(nonce):
                return f"it counts an update whose nonce {nonce.hex()} was seen before: a replay"
        if self._trusted is not None:
            if len(signers) != count:
                return (
                    f"it counts {count} updates, {len(signers)} of them signed: the round "
                    "takes only updates signed by enrolled keys"
                )
            enrolled, once = set(self._trusted), set()
            for signer in signers:
                if signer not in enrolled:
                    return f"it counts an update signed by {signer.hex()}, which is not enrolled"
                if signer in self._signers or signer in once:
                    return f"signer {signer.hex()} already sent an update this round"
                once.add(signer)
        if (self._authenticated_only or self._max_age_ms is not None) and len(nonces) != count:
            return (
                f"it counts {count} updates, {len(nonces)} of them authenticated: the round "
                "takes only authenticated updates"
            )
        return None

    def claim_partial(self, signers: list[bytes], nonces: list[bytes]) -> None:
        """Count a merged partial's signers and nonces as used, in this round and (the
        nonces) in ``seen_nonces``."""
        self._signers.update(signers)
        self._nonces.update(nonces)
        if self._seen_nonces is not None:
            for nonce in nonces:
                self._seen_nonces.add(nonce)

    def remember(self, payload: Any) -> None:
        """Keep an accepted ``payload``'s nonce in ``seen_nonces`` for later rounds."""
        nonce = None if payload is None else _nonce(payload)
        if nonce is not None and self._seen_nonces is not None:
            self._seen_nonces.add(nonce)


def authentication_error(index: int, reason: str) -> AuthenticationError:
    """The error that says the round refused update ``index``'s authentication."""
    error = AuthenticationError(f"update {index}: {reason}")
    error.update = index
    return error
