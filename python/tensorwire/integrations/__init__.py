"""Adapters for the frameworks that run federated rounds; each imports its framework
only when used: :mod:`tensorwire.integrations.flower` (``flwr``'s ``ArrayRecord``)."""

__all__: list[str] = []
