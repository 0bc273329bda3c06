"""Converters between tensorwire and the formats users have today.

``flower``: Flower ``ArrayRecord`` adapters (needs the optional ``flwr`` package).
"""

__all__ = ["flower"]
