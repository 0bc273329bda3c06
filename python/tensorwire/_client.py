"""The client side of a federated round: ``encode_update`` and ``ErrorFeedback``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from . import _core
from ._aggregate import UPDATE_KEY
from ._arrays import as_array
from ._container import CodecSpec, _base_id, _codec_for, decode, encode
from ._errors import InputError
from ._structure import flatten, unflatten

__all__ = ["ErrorFeedback", "encode_update"]


class ErrorFeedback:
    """Carries what a lossy or sparse encode dropped into the next round.

    Federated clients that send top-k or quantised updates keep the residual
    ``intended - decoded(sent)`` and add it to the next round's update, so that nothing
    is lost for good, only delayed. Pass one instance to every
    :func:`encode_update` call of a client. Residuals are kept for float tensors only.
    """

    def __init__(self) -> None:
        self._residual: dict[str, np.ndarray] = {}

    @property
    def residual(self) -> dict[str, np.ndarray]:
        """The residual per tensor name (empty before the first round)."""
        return dict(self._residual)

    def apply(self, name: str, update: np.ndarray) -> np.ndarray:
        """``update`` plus the residual carried for ``name`` (a new array)."""
        r = self._residual.get(name)
        if r is None or update.dtype.kind != "f":
            return update
        if r.shape != update.shape or r.dtype != update.dtype:
            raise InputError(
                f"tensor {name!r}: the update is {update.dtype}{list(update.shape)}, the "
                f"residual carried from last round is {r.dtype}{list(r.shape)}"
            )
        return update + r

    def record(self, name: str, intended: np.ndarray, sent: np.ndarray) -> None:
        """Keep ``intended - sent`` for ``name`` (the part the encode dropped)."""
        if intended.dtype.kind == "f":
            self._residual[name] = np.subtract(intended, sent, dtype=intended.dtype)

    def reset(self) -> None:
        """Forget every residual (e.g. when the model changes shape)."""
        self._residual.clear()

    def __repr__(self) -> str:
        total = sum(float(np.linalg.norm(r)) ** 2 for r in self._residual.values()) ** 0.5
        return f"<tensorwire.ErrorFeedback {len(self._residual)} tensors, norm {total:.3g}>"


def _needs_base(codec: CodecSpec, names_arrays: list[tuple[str, np.ndarray]]) -> bool:
    specs = {_codec_for(codec, n, a) for n, a in names_arrays}
    flags = {_core.codec_needs_base(s) for s in specs}
    if len(flags) > 1:
        raise InputError(
            "codec mixes delta and non-delta specs across tensors; use one kind per update"
        )
    return flags.pop() if flags else False


def encode_update(
    old: Any,
    new: Any,
    *,
    codec: CodecSpec = "raw",
    round: Optional[int] = None,
    client_id: Optional[str] = None,
    num_samples: Optional[float] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    error_feedback: Optional[ErrorFeedback] = None,
    key: Any = None,
    signing_key: Any = None,
) -> bytes:
    """Encode a client's update (``new`` local model against ``old`` global model).

    With a delta codec (one whose decoding needs the base, e.g. ``"delta+topk:0.01+f16+zstd"``)
    the payload is ``encode(new, base=old, codec=codec)``. With any other codec it is the
    difference ``new - old`` encoded with ``codec``. Either way the payload's metadata
    records ``{"tensorwire.update": {"kind", "base", "round", "client", "samples"}}``, so
    :func:`tensorwire.aggregate` / :class:`tensorwire.Aggregator` (``base=old``) turn it
    back into the client's model and can weight it by ``num_samples``.

    ``error_feedback``: add the residual carried from the previous round to this update
    before encoding, and keep what this encode drops (``intended - decoded``) for the
    next one. ``metadata``: more JSON-compatible entries for the payload's metadata.
    ``key`` and ``signing_key`` authenticate and sign the payload as in
    :func:`tensorwire.encode` (a server with ``trusted_keys=`` admits only signed updates).
    """
    old_leaves, _ = flatten(old)
    new_leaves, structure = flatten(new)
    olds = {n: as_array(x, n) for n, x in old_leaves}
    news = [(n, as_array(x, n)) for n, x in new_leaves]
    if [n for n, _ in news] != list(olds):
        raise InputError(
            "old and new must hold the same tensors in the same order; "
            f"old has {list(olds)[:5]}..., new has {[n for n, _ in news][:5]}..."
        )
    diffs: list[tuple[str, np.ndarray]] = []
    for n, a in news:
        o = olds[n]
        if o.shape != a.shape or o.dtype != a.dtype:
            raise InputError(
                f"tensor {n!r}: new is {a.dtype}{list(a.shape)}, old is {o.dtype}{list(o.shape)}"
            )
        d = np.subtract(a, o, dtype=a.dtype)
        if error_feedback is not None:
            d = error_feedback.apply(n, d)
        diffs.append((n, d))
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InputError(f"metadata must be a mapping, not {type(metadata).__name__}")
    if metadata is not None and UPDATE_KEY in metadata:
        raise InputError(f"metadata key {UPDATE_KEY!r} is reserved")
    base_id = _base_id(olds)
    delta = _needs_base(codec, diffs)
    record = {
        "kind": "model" if delta else "difference",
        "base": base_id,
        "round": round,
        "client": client_id,
        "samples": num_samples,
    }
    meta = {**(metadata or {}), UPDATE_KEY: record}
    names = [n for n, _ in diffs]
    if delta:
        intended = [np.add(olds[n], d, dtype=d.dtype) for n, d in diffs]
        tensors, base = unflatten(structure, names, intended), old
    else:
        tensors, base = unflatten(structure, names, [d for _, d in diffs]), None
    payload = encode(
        tensors, codec=codec, metadata=meta, base=base, key=key, signing_key=signing_key
    )
    if error_feedback is not None:
        leaves, _ = flatten(decode(payload, base=base, verify=False, key=key))
        sent = dict(leaves)
        for n, d in diffs:
            s = sent[n]
            error_feedback.record(n, d, s - olds[n] if delta else s)
    return payload
