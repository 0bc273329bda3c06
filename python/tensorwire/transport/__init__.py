"""Adapters that move tensorwire payloads through message brokers with size limits.

Each adapter cuts payloads with :func:`tensorwire.chunk` / :func:`tensorwire.encode_chunks`
and puts them back together with a :class:`tensorwire.Reassembler`; the broker's client
library is imported only by its adapter module (``tensorwire.transport.nats`` needs
``nats-py``). ``tensorwire.transport.retransmit`` resends the pieces an at-most-once
broker lost, whatever the broker.
"""

__all__: list[str] = []
