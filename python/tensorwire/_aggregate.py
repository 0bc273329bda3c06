"""Federated averaging over encoded updates: ``aggregate`` and the streaming ``Aggregator``.

The Rust core does all the work on tensor bytes (decode into a per-thread scratch block,
accumulate, finish) with the GIL released; this module decides the round's template,
reads the update metadata written by :func:`tensorwire.encode_update`, and reports
updates that do not fit the round.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Optional, Union

import numpy as np

from . import _core
from ._arrays import as_array, byte_view, dtype_name, dtype_named
from ._container import _base_id
from ._errors import InputError, TensorwireError
from ._structure import flatten, unflatten

__all__ = [
    "UPDATE_KEY",
    "Aggregator",
    "MismatchError",
    "MismatchWarning",
    "UpdateInfo",
    "aggregate",
    "update_info",
]

#: The key of the update record in a payload's metadata (see ``encode_update``).
UPDATE_KEY = "tensorwire.update"

OnMismatch = Union[str, Callable[[int, str], Any]]


class MismatchError(TensorwireError, ValueError):
    """An update does not fit the round: other tensors, dtypes or shapes, another base
    or another round. Raised with ``on_mismatch="raise"`` (the default)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"update {index} does not fit the round: {reason}")
        self.index = index
        self.reason = reason


class MismatchWarning(UserWarning):
    """An update was skipped because it does not fit the round (``on_mismatch="skip"``)."""


class UpdateInfo(NamedTuple):
    """The update record of a payload made by :func:`tensorwire.encode_update`."""

    kind: str
    """``"difference"`` (the tensors are new - old) or ``"model"`` (a delta codec's payload
    that decodes, against the base, to the client's model)."""
    base: Optional[str]
    """Id of the global model the update was made against (``tw.open(...).base_id``
    style hex), or None."""
    round: Optional[int]
    client: Optional[str]
    samples: Optional[float]


def _info_of(metadata: Any) -> UpdateInfo | None:
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get(UPDATE_KEY), Mapping):
        return None
    rec = metadata[UPDATE_KEY]
    return UpdateInfo(
        kind=str(rec.get("kind", "model")),
        base=rec.get("base"),
        round=rec.get("round"),
        client=rec.get("client"),
        samples=rec.get("samples"),
    )


def update_info(payload: Any) -> UpdateInfo | None:
    """The update record of ``payload`` (kind, base, round, client, samples), or None
    when the payload carries none. Parses the header only."""
    m = _core.Payload(payload).metadata
    return _info_of(None if m is None else json.loads(m))


def _is_payload(update: Any) -> bool:
    return not isinstance(update, (Mapping, list, tuple))


class _Update(NamedTuple):
    arg: tuple[Any, ...]  # (payload, tensors, difference base id, weight) for the core
    info: Optional[UpdateInfo]
    names: list[str]
    structure: Optional[str]
    specs: list[tuple[str, str, tuple[int, ...]]]


def _with_index(i: int, e: TensorwireError) -> TensorwireError:
    return type(e)(f"update {i}: {e}")


def _prepare(i: int, update: Any, weight: Any) -> _Update:
    """Normalise one update for the core: a payload (parsed for its metadata and
    template) or a tensor structure (viewed as bytes, never copied)."""
    if _is_payload(update):
        try:
            p = _core.Payload(update)
        except TensorwireError as e:
            raise _with_index(i, e) from None
        m = p.metadata
        info = _info_of(None if m is None else json.loads(m))
        diff_base = info.base if info is not None and info.kind == "difference" else None
        if diff_base is None and info is not None and info.kind == "difference":
            raise InputError(f"update {i}: a difference whose base id is missing")
        entries = p.entries()
        specs = [(e[0], e[1], tuple(e[2])) for e in entries]
        names = [e[0] for e in entries]
        return _Update((update, None, diff_base, weight), info, names, p.structure, specs)
    leaves, structure = flatten(update)
    tensors = []
    for name, x in leaves:
        a = as_array(x, name)
        tensors.append((name, dtype_name(a.dtype), a.shape, byte_view(a)))
    specs = [(t[0], t[1], tuple(t[2])) for t in tensors]
    return _Update((None, tensors, None, weight), None, [n for n, *_ in tensors], structure, specs)


def _weights_of(weights: Any, updates: Sequence[_Update], n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if isinstance(weights, str):
        if weights != "samples":
            raise InputError(f'weights must be None, a sequence or "samples", got {weights!r}')
        out = []
        for i, u in enumerate(updates):
            if u.info is None or u.info.samples is None:
                raise InputError(
                    f'update {i}: weights="samples" but it records no sample count '
                    "(make updates with tw.encode_update(..., num_samples=n))"
                )
            out.append(float(u.info.samples))
        return out
    w = [float(x) for x in weights]
    if len(w) != n:
        raise InputError(f"{len(w)} weights for {n} updates")
    return w


class _Template(NamedTuple):
    specs: list[tuple[str, str, tuple[int, ...]]]
    structure: Optional[str]
    base_id: Optional[str]
    base_views: Optional[list[np.ndarray]]
    base_keep: Any  # keeps the base arrays alive


def _template(base: Any, first: _Update | None) -> _Template:
    if base is not None:
        leaves, structure = flatten(base)
        arrays = {name: as_array(x, name) for name, x in leaves}
        specs = [(n, dtype_name(a.dtype), tuple(a.shape)) for n, a in arrays.items()]
        views = [byte_view(a) for a in arrays.values()]
        return _Template(specs, structure, _base_id(arrays), views, arrays)
    if first is None:
        raise InputError("nothing to average: no updates")
    return _Template(first.specs, first.structure, None, None, None)


def _outputs(template: _Template, out: Any) -> tuple[list[np.ndarray], Any]:
    names = [s[0] for s in template.specs]
    if out is None:
        arrays = [np.empty(shape, dtype=dtype_named(dt, n)) for n, dt, shape in template.specs]
        return arrays, unflatten(template.structure, names, arrays)
    leaves, _ = flatten(out)
    given = dict(leaves)
    arrays = []
    for n, dt, shape in template.specs:
        if n not in given:
            raise InputError(f"out has no tensor {n!r}")
        a = given[n]
        if not isinstance(a, np.ndarray) or a.dtype != dtype_named(dt, n) or a.shape != shape:
            raise InputError(f"out[{n!r}] must be a {dt} numpy array of shape {shape}")
        if not (a.flags.c_contiguous and a.flags.writeable):
            raise InputError(f"out[{n!r}] must be writable and C-contiguous")
        arrays.append(a)
    return arrays, out


def _report(on_mismatch: OnMismatch, index: int, reason: str) -> None:
    if on_mismatch == "raise":
        raise MismatchError(index, reason)
    if on_mismatch == "skip":
        warnings.warn(
            f"update {index} skipped: it does not fit the round: {reason}",
            MismatchWarning,
            stacklevel=3,
        )
    else:
        on_mismatch(index, reason)  # type: ignore[operator]


def _check_on_mismatch(on_mismatch: OnMismatch) -> None:
    if on_mismatch not in ("raise", "skip") and not callable(on_mismatch):
        raise InputError(
            f'on_mismatch must be "raise", "skip" or a callable(index, reason), got {on_mismatch!r}'
        )


def _round_reason(info: UpdateInfo | None, round: int | None) -> str | None:
    if round is None:
        return None
    got = None if info is None else info.round
    if got != round:
        return f"it is from round {got}, this is round {round}"
    return None


def aggregate(
    updates: Sequence[Any],
    weights: Union[str, Sequence[float], None] = None,
    *,
    base: Any = None,
    out: Any = None,
    clip_norm: Optional[float] = None,
    on_mismatch: OnMismatch = "raise",
    round: Optional[int] = None,
    accumulate: str = "auto",
    verify: bool = True,
) -> Any:
    """Weighted average (FedAvg) of ``updates``, computed in Rust tensor by tensor.

    ``updates`` are payloads (bytes-like, any codec, delta codecs included) or tensor
    structures, freely mixed. Each update is decoded one tensor at a time into a
    per-thread scratch block and added into an accumulator, so memory stays near one
    model however many updates there are.

    ``weights``: None (equal), one number per update (e.g. sample counts), or
    ``"samples"`` to use the counts recorded by :func:`tensorwire.encode_update`.

    ``base``: the round's global model. Delta-coded payloads decode against it,
    difference payloads from ``encode_update`` count as ``base + difference``, and the
    result is the new global model ``base + Σ wᵢ(xᵢ - base) / Σ wᵢ``. Without a base the
    updates are averaged as they decode.

    ``clip_norm``: scale each update's difference ``xᵢ - base`` (or ``xᵢ`` without a
    base) down to this L2 norm over all its tensors. ``round``: refuse updates whose
    recorded round differs. ``on_mismatch``: what to do with an update whose tensor
    names, dtypes or shapes, base or round do not fit: ``"raise"`` a
    :class:`MismatchError` (default), ``"skip"`` it with a :class:`MismatchWarning`, or
    call ``on_mismatch(index, reason)`` and skip it. Bad payloads always raise.

    ``accumulate``: ``"auto"`` (float32 sums for ≤32-bit floats, float64 otherwise) or
    ``"float64"``. ``out``: a structure of arrays to write the result into. Returns the
    result in the structure of ``base`` (or of the first update).
    """
    _check_on_mismatch(on_mismatch)
    if isinstance(updates, (str, bytes, bytearray, memoryview, Mapping)):
        raise InputError("updates must be a sequence of payloads or tensor structures")
    updates = list(updates)
    prepared = [_prepare(i, u, 0.0) for i, u in enumerate(updates)]
    w = _weights_of(weights, prepared, len(prepared))
    prepared = [p._replace(arg=(*p.arg[:3], wi)) for p, wi in zip(prepared, w)]

    # Updates from another round are refused before the core sees them.
    candidates = []
    for i, p in enumerate(prepared):
        reason = _round_reason(p.info, round)
        if reason is not None:
            _report(on_mismatch, i, reason)
        else:
            candidates.append(i)
    template = _template(base, prepared[candidates[0]] if candidates else None)
    arrays, result = _outputs(template, out)
    rejected, _accepted, _norms, _scales = _core.aggregate(
        [(n, dt, list(shape)) for n, dt, shape in template.specs],
        template.base_id,
        template.base_views,
        [prepared[i].arg for i in candidates],
        [byte_view(a) for a in arrays],
        clip_norm,
        accumulate,
        verify,
        on_mismatch != "raise",
    )
    for k, reason in rejected:
        _report(on_mismatch, candidates[k], reason)
    return result


class Aggregator:
    """Streaming FedAvg for a server that receives updates one at a time.

    ``Aggregator(base=global_model)`` (or ``template=`` a structure with the round's
    tensors when there is no base), then ``add(payload, weight)`` per update and
    ``result()`` at the end. Running sums take one model of float32 (float64 for
    float64 and integer tensors, or with ``accumulate="float64"``); each ``add`` decodes
    tensor by tensor with the GIL released. Options as for :func:`aggregate`; without
    ``base`` or ``template`` the first update fixes the round's tensors.

    ``added`` lists ``(index, client, weight, norm, scale)`` of each accepted update and
    ``skipped`` lists ``(index, reason)``; ``add`` returns whether the update was added.
    """

    def __init__(
        self,
        *,
        base: Any = None,
        template: Any = None,
        clip_norm: Optional[float] = None,
        on_mismatch: OnMismatch = "raise",
        round: Optional[int] = None,
        accumulate: str = "auto",
        verify: bool = True,
    ) -> None:
        _check_on_mismatch(on_mismatch)
        self._options = (clip_norm, accumulate, verify)
        self._on_mismatch = on_mismatch
        self._round = round
        self._template: _Template | None = None
        self._core: _core.Accumulator | None = None
        self._seen = 0
        self.added: list[tuple[int, Optional[str], float, float, float]] = []
        self.skipped: list[tuple[int, str]] = []
        if base is not None:
            self._start(_template(base, None))
        elif template is not None:
            self._start(_template(None, _prepare(0, template, 0.0)))

    def _start(self, template: _Template) -> None:
        clip_norm, accumulate, verify = self._options
        self._core = _core.Accumulator(
            [(n, dt, list(shape)) for n, dt, shape in template.specs],
            template.base_id,
            clip_norm,
            accumulate,
            verify,
        )
        self._template = template

    def add(self, update: Any, weight: Union[str, float, None] = None) -> bool:
        """Add one update (payload or tensor structure) with ``weight`` (1 by default;
        ``"samples"`` uses the count recorded by ``encode_update``). Returns False when
        it was skipped as not fitting the round (see ``on_mismatch``)."""
        index = self._seen
        self._seen += 1
        p = _prepare(index, update, 0.0)
        if weight is None:
            w = 1.0
        elif isinstance(weight, str):
            w = _weights_of(weight, [p], 1)[0]
        else:
            w = float(weight)
        reason = _round_reason(p.info, self._round)
        if reason is None:
            if self._core is None:
                self._start(_template(None, p))
            assert self._core is not None and self._template is not None
            reason, norm, scale = self._core.add((*p.arg[:3], w), self._template.base_views)
        if reason is not None:
            self.skipped.append((index, reason))
            _report(self._on_mismatch, index, reason)
            return False
        client = None if p.info is None else p.info.client
        self.added.append((index, client, w, norm, scale))
        return True

    @property
    def count(self) -> int:
        """Number of updates added so far."""
        return 0 if self._core is None else self._core.count

    @property
    def total_weight(self) -> float:
        """Sum of the weights added so far."""
        return 0.0 if self._core is None else self._core.total_weight

    def result(self, *, out: Any = None) -> Any:
        """The weighted average of the updates added so far, in the round's structure
        (written into ``out`` when given)."""
        if self._core is None or self._template is None:
            raise InputError("nothing to average: no updates were added")
        arrays, result = _outputs(self._template, out)
        self._core.finish_into(self._template.base_views, [byte_view(a) for a in arrays])
        return result

    def __repr__(self) -> str:
        return (
            f"<tensorwire.Aggregator {self.count} updates added, {len(self.skipped)} skipped, "
            f"total weight {self.total_weight:g}>"
        )
