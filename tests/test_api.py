"""The public face: the exact top-level names, and every public submodule's names resolve.

Changing the top level is a decision, not an accident: this list changes with it."""

from __future__ import annotations

import importlib

import pytest

import tensorwire as tw

TOP_LEVEL = [
    "FORMAT_VERSION",
    "Aggregator",
    "AuthenticationError",
    "CodecError",
    "FormatError",
    "InputError",
    "IntegrityError",
    "Reader",
    "Reassembler",
    "TensorwireError",
    "__version__",
    "aggregate",
    "chunk",
    "decode",
    "encode",
    "encode_chunks",
    "encode_into",
    "encode_update",
    "encoded_size",
    "formats",
    "generate_signing_key",
    "key_id",
    "load",
    "open",
    "public_key",
    "save",
]

SUBMODULES = [
    "tensorwire.chunking",
    "tensorwire.errors",
    "tensorwire.fl",
    "tensorwire.formats",
    "tensorwire.formats.md5list",
    "tensorwire.formats.npz",
    "tensorwire.formats.ptth",
    "tensorwire.formats.safetensors",
    "tensorwire.formats.tensorwire",
    "tensorwire.frameworks",
    "tensorwire.integrations",
    "tensorwire.integrations.flower",
    "tensorwire.transport",
    "tensorwire.transport.nats",
    "tensorwire.transport.retransmit",
    "tensorwire.types",
]


def isort_order(names: list[str]) -> list[str]:
    """Sorted as ruff's RUF022 sorts ``__all__``: CONSTANTS, then Classes, then the rest."""
    return sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))


def test_top_level_names_are_exactly_these() -> None:
    assert tw.__all__ == TOP_LEVEL
    assert tw.__all__ == isort_order(tw.__all__)
    # At most 20 names of our choosing; the names the design contract added later come on
    # top: the trust names (AuthenticationError, generate_signing_key, public_key, and
    # key_id: the contract's decode(keys={key_id: key}) needs it) and encoding into a
    # reused buffer (encode_into, encoded_size).
    contract_additions = {
        "AuthenticationError",
        "encode_into",
        "encoded_size",
        "generate_signing_key",
        "key_id",
        "public_key",
    }
    assert len(set(tw.__all__) - contract_additions) <= 20
    for name in TOP_LEVEL:
        assert getattr(tw, name) is not None


def test_dropped_names_are_gone_from_the_top_level() -> None:
    for name in [
        "ClosedError",
        "Chunks",
        "CodecSpec",
        "ErrorFeedback",
        "MismatchError",
        "UpdateInfo",
        "chunk_info",
        "update_info",
        "CHUNK_HEADER_LEN",
        "TensorInfo",
    ]:
        assert not hasattr(tw, name), name


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_names_resolve(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no docstring"
    names = module.__all__
    assert names == isort_order(names), f"{name}.__all__ is not sorted"
    for attr in names:
        assert getattr(module, attr) is not None, f"{name}.{attr}"


def test_submodules_re_export_the_same_objects() -> None:
    from tensorwire import chunking, errors, fl, types

    assert chunking.chunk is tw.chunk and chunking.Reassembler is tw.Reassembler
    assert chunking.encode_chunks is tw.encode_chunks
    assert fl.aggregate is tw.aggregate and fl.Aggregator is tw.Aggregator
    assert fl.encode_update is tw.encode_update
    assert errors.TensorwireError is tw.TensorwireError
    assert errors.FormatError is tw.FormatError and errors.IntegrityError is tw.IntegrityError
    assert errors.MismatchError is fl.MismatchError
    assert types.Reader is tw.Reader and types.UpdateInfo is fl.UpdateInfo
    assert types.Chunks is chunking.Chunks
    for error in (errors.ClosedError, errors.CodecError, errors.InputError, errors.MismatchError):
        assert issubclass(error, tw.TensorwireError)


def test_design_names_keep_working() -> None:
    """Every name ../shared/DESIGN.md gives, spelled as it spells them."""
    for name in [
        "encode",
        "decode",
        "save",
        "load",
        "open",
        "chunk",
        "Reassembler",
        "aggregate",
        "Aggregator",
        "TensorwireError",
        "IntegrityError",
        "FormatError",
    ]:
        assert name in tw.__all__
    for fmt in ["safetensors", "npz", "md5list", "ptth"]:
        module = getattr(tw.formats, fmt)
        assert callable(module.dumps) and callable(module.loads)
    from tensorwire.transport import nats

    assert callable(nats.publish) and callable(nats.publish_tensors) and callable(nats.subscribe)


def test_formats_flower_is_the_integrations_module() -> None:
    import tensorwire.formats.flower
    import tensorwire.integrations.flower

    assert tensorwire.formats.flower is tensorwire.integrations.flower
    assert tw.formats.flower is tensorwire.integrations.flower
