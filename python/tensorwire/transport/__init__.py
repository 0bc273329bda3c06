"""Adapters that move tensorwire payloads through message brokers with size limits.

Each adapter cuts payloads with :func:`tensorwire.chunk` / :func:`tensorwire.encode_chunks`
and puts them back together with a :class:`tensorwire.Reassembler`; the broker's client
library is imported only by its adapter module (``tensorwire.transport.nats`` needs
``nats-py``, ``tensorwire.transport.kafka`` needs ``confluent-kafka``).
``tensorwire.transport.retransmit`` resends the pieces an at-most-once broker lost,
whatever the broker.
"""

from __future__ import annotations

from typing import Any, Optional

from .._chunk import Reassembler
from .._errors import InputError
from .._trust import Keys

__all__: list[str] = []


def _reassembler(
    reassembler: Optional[Reassembler],
    *,
    key: Optional[bytes],
    keys: Optional[Keys],
    trusted_keys: Any,
) -> Reassembler:
    """What a subscription reassembles with: ``reassembler`` as given, or one made with
    the trust arguments (giving both is an error)."""
    trust = {"key": key, "keys": keys, "trusted_keys": trusted_keys}
    given = {name: v for name, v in trust.items() if v is not None}
    if reassembler is None:
        return Reassembler(**given)
    if given:
        raise InputError(
            f"pass {'/'.join(f'{n}=' for n in given)} or reassembler= (made with its own), not both"
        )
    return reassembler
