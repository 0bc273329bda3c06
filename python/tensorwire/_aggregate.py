"""Aggregation over encoded updates: ``aggregate`` (FedAvg, median, trimmed mean) and the
streaming ``Aggregator`` (FedAvg).

The Rust core does all the work on tensor bytes with the GIL released: each update is
surveyed first (checksums, every value finite, its norm, the sums' headroom) and only
then combined, so a refused or bad update changes nothing. This module parses each
payload once (``_core.Payload``), decides the round's template, reads the update records
written by :func:`tensorwire.encode_update` (checked in Rust), admits updates by who
sent them (``_admission``: keys, enrolled signers, nonces, creation times), and reports the
updates that are refused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, MutableSet, Sequence
from typing import Any, NamedTuple, Optional, Union

import numpy as np

from . import _core
from ._admission import Admission, authentication_error, parse_payload
from ._arrays import as_array, byte_view, dtype_name, dtype_named
from ._chunk import Chunks
from ._container import _base_id
from ._errors import FormatError, InputError, TensorwireError
from ._structure import flatten, unflatten
from ._trust import Keys, optional_secret, reader_keys, trusted

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

#: How refusals of :meth:`Aggregator.merge` name what they refuse.
_PARTIAL = "partial aggregate"


class MismatchError(TensorwireError, ValueError):
    """An update is refused by the round: other tensors, dtypes or shapes, another base
    or round, a value that is not finite, a norm above ``max_norm``, a payload already
    counted, a malformed update record. Raised with ``on_mismatch="raise"`` (the
    default)."""

    def __init__(self, index: int, reason: str, what: str = "update") -> None:
        super().__init__(f"{what} {index} does not fit the round: {reason}")
        self.index = index
        self.update = index
        self.reason = reason


class MismatchWarning(UserWarning):
    """An update was skipped because the round refused it (``on_mismatch="skip"``)."""


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


def _info_of(payload: Any) -> UpdateInfo | None:
    """The checked record of a parsed payload (a FormatError says why it is malformed)."""
    rec = payload.update_record()
    if rec is None:
        return None
    difference, base, round_, client, samples = rec
    kind = "difference" if difference is not None else "model"
    return UpdateInfo(kind, base, round_, client, samples)


def update_info(payload: Any) -> UpdateInfo | None:
    """The update record of ``payload`` (kind, base, round, client, samples), or None
    when the payload carries none. Parses the header only; a malformed record is a
    :class:`FormatError` saying why."""
    return _info_of(_core.Payload(payload))


class PartialInfo(NamedTuple):
    """What a partial aggregate (:meth:`Aggregator.partial`) counts, from its record."""

    round: Optional[int]
    base: Optional[str]
    """Id of the global model its round aggregates against, or None."""
    count: int
    total_weight: float
    content_ids: list[str]
    """The content ids of the updates it counts (lowercase hex)."""


def partial_info(payload: Any, *, key: Any = None, keys: Optional[Keys] = None) -> PartialInfo:
    """What the partial aggregate ``payload`` counts (round, base, count, total weight,
    the updates' content ids), from its record and id tensors; the sums are not read.
    ``key``/``keys`` read a keyed partial. A payload that is not a well-formed partial
    is a :class:`FormatError` saying why."""
    parsed = _core.Payload(payload, keys=reader_keys(key, keys))
    p, why = _core.read_partial(parsed)
    if p is None:
        raise FormatError(f"not a partial aggregate: {why}")
    return PartialInfo(p.round, p.base_id, p.count, p.total_weight, p.content_ids())


def _is_payload(update: Any) -> bool:
    return not isinstance(update, (Mapping, list, tuple))


class _Update(NamedTuple):
    payload: Any  # the parsed _core.Payload, or None
    tensors: Optional[list[tuple[str, str, tuple[int, ...], np.ndarray]]]
    info: Optional[UpdateInfo]
    problem: Optional[str]  # why the round refuses it before the core sees it
    structure: Optional[str]
    specs: list[tuple[str, str, tuple[int, ...]]]
    refusal: Optional[str] = None  # why the core refused its authentication

    def arg(self, weight: float, index: int) -> tuple[Any, ...]:
        """What the core takes: (payload, tensors, difference base id, weight, number)."""
        info = self.info
        diff = info.base if info is not None and info.kind == "difference" else None
        return (self.payload, self.tensors, diff, weight, index)


def _prepare(i: int, update: Any, admission: Optional[Admission] = None) -> _Update:
    """Normalise one update for the core: a payload (parsed once, with the keys and
    trusted signers of ``admission``, for its record and template) or a tensor structure
    (viewed as bytes, never copied)."""
    if _is_payload(update):
        if admission is None:
            p = _core.Payload(update, update=i)  # its errors name the update
        else:
            p, refusal = admission.parse(i, update)
            if p is None:
                return _Update(None, None, None, None, None, [], refusal)
        info, problem = None, None
        try:
            info = _info_of(p)
        except FormatError as e:
            problem = str(e)
        specs = [(e[0], e[1], tuple(e[2])) for e in p.entries()]
        return _Update(p, None, info, problem, p.structure, specs)
    tensors = []
    try:
        leaves, structure = flatten(update)
        for name, x in leaves:
            a = as_array(x, name)
            tensors.append((name, dtype_name(a.dtype), a.shape, byte_view(a)))
    except TensorwireError as e:
        if e.update is None:
            e.update = i
        raise
    specs = [(t[0], t[1], tuple(t[2])) for t in tensors]
    return _Update(None, tensors, None, None, structure, specs)


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be a number, got {type(x).__name__}")
    return float(x)


def _weight(u: _Update, weight: Any, i: int) -> tuple[float, str | None]:
    """The weight of update ``i`` (1, a number, or ``"samples"`` from its record), or the
    reason the round refuses it."""
    if weight is None:
        return 1.0, None
    if isinstance(weight, str):
        if weight != "samples":
            raise InputError(f'weights must be None, a sequence or "samples", got {weight!r}')
        if u.info is None or u.info.samples is None:
            return 0.0, (
                'weights="samples" but it records no sample count '
                "(make updates with tw.encode_update(..., num_samples=n))"
            )
        return u.info.samples, None
    return _number(weight, f"the weight of update {i}"), None


class _Template(NamedTuple):
    specs: list[tuple[str, str, tuple[int, ...]]]
    structure: Optional[str]
    base_id: Optional[str]
    base_views: Optional[list[np.ndarray]]
    base_keep: Any  # keeps the base arrays alive


def _template(base: Any, first: _Update | None, max_decoded_bytes: int | None) -> _Template:
    if base is not None:
        leaves, structure = flatten(base)
        arrays = {name: as_array(x, name) for name, x in leaves}
        specs = [(n, dtype_name(a.dtype), tuple(a.shape)) for n, a in arrays.items()]
        views = [byte_view(a) for a in arrays.values()]
        return _Template(specs, structure, _base_id(arrays), views, arrays)
    if first is None:
        raise InputError("nothing to average: no updates")
    if first.payload is not None:
        # The round's memory follows what this payload declares: bound it first.
        first.payload.decoded_bytes(None, True, max_decoded_bytes)
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


def _report(
    on_mismatch: OnMismatch,
    index: int,
    reason: str,
    authentication: bool = False,
    what: str = "update",
) -> None:
    """Refuse update ``index`` (or the partial aggregate: ``what``) for ``reason`` as
    ``on_mismatch`` says; ``authentication``: the round does not admit who sent it (an
    :class:`AuthenticationError` to raise)."""
    if on_mismatch == "raise":
        if authentication:
            raise authentication_error(index, reason)
        raise MismatchError(index, reason, what)
    if on_mismatch == "skip":
        why = "it is not admitted" if authentication else "it does not fit the round"
        warnings.warn(f"{what} {index} skipped: {why}: {reason}", MismatchWarning, stacklevel=3)
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


def _specs(template: _Template) -> list[tuple[str, str, list[int]]]:
    return [(n, dt, list(shape)) for n, dt, shape in template.specs]


def aggregate(
    updates: Sequence[Any],
    weights: Union[str, Sequence[float], None] = None,
    *,
    base: Any = None,
    out: Any = None,
    method: str = "mean",
    clip_norm: Optional[float] = None,
    max_norm: Optional[float] = None,
    on_mismatch: OnMismatch = "raise",
    round: Optional[int] = None,
    accumulate: str = "auto",
    verify: bool = True,
    max_decoded_bytes: Optional[int] = None,
    key: Any = None,
    keys: Optional[Keys] = None,
    trusted_keys: Optional[Iterable[Any]] = None,
    max_age: Optional[float] = None,
    seen_nonces: Optional[MutableSet[bytes]] = None,
) -> Any:
    """Combine ``updates`` tensor by tensor in Rust: the weighted mean (FedAvg), or with
    ``method="median"`` / ``"trimmed_mean:β"`` the element-wise median or β-trimmed mean
    (Flower's FedMedian and FedTrimmedAvg; unweighted, so ``weights`` must be None).

    ``updates`` are payloads (bytes-like, any codec, delta codecs included) or tensor
    structures, freely mixed. Each update is decoded one tensor at a time into a
    per-thread scratch block, so memory stays near one model however many updates
    there are (the robust methods also hold one codec block per update and thread).

    ``weights``: None (equal), one number per update (e.g. sample counts), or
    ``"samples"`` to use the counts recorded by :func:`tensorwire.encode_update`.

    ``base``: the round's global model. Delta-coded payloads decode against it,
    difference payloads from ``encode_update`` count as ``base + difference``, and the
    result is the new global model ``base + Σ wᵢ(xᵢ - base) / Σ wᵢ``. Without a base the
    updates are combined as they decode.

    Every update is checked before it counts; the round refuses one (see
    ``on_mismatch``) whose tensor names, dtypes or shapes, base or ``round`` do not fit,
    that holds a NaN or infinity, whose contribution's L2 norm exceeds ``max_norm``, that
    is the same payload as an earlier one (content id), whose update record is malformed,
    or whose weighted values could overflow the sums. ``clip_norm`` scales each update's
    contribution ``xᵢ - base`` (or ``xᵢ``) down to that L2 norm instead. ``on_mismatch``:
    ``"raise"`` a :class:`MismatchError` (default), ``"skip"`` with a
    :class:`MismatchWarning`, or call ``on_mismatch(index, reason)`` and skip. Bad payloads
    (a checksum mismatch, corrupt data) always raise.

    Who may send updates (docs/federated.md, "Enrolled clients"): ``key`` or ``keys``
    (``{key_id: key}`` or a list) admit only payloads authenticated with one of those
    keys; ``trusted_keys`` (the clients' Ed25519 public keys) only payloads signed by one
    of them, and at most one update per signer (a later one is refused, the first
    counts); ``max_age`` (seconds) only payloads whose authenticated creation time lies
    within ``max_age`` of this machine's clock either way (the future side allows for
    the clients' clocks running ahead; ``max_age`` must cover both the delay and the skew
    between clocks); ``seen_nonces``, a set the server keeps across rounds, refuses
    payloads whose nonce it holds and receives the nonces of the updates this call
    accepts (once the result is computed). No two updates of one call carry the same
    nonce. With ``key``, ``keys``, ``trusted_keys`` or ``max_age``, tensor structures
    are refused (they cannot be authenticated). These refusals are
    :class:`AuthenticationError` (with ``.update``) under ``on_mismatch="raise"``, and
    skipped like the others otherwise; so is a payload whose authentication fails
    (a wrong or missing key, an unsigned payload or an untrusted signer, a bad signature).

    ``accumulate``: ``"auto"`` (float32 sums for ≤32-bit floats, float64 otherwise) or
    ``"float64"``. ``out``: a structure of arrays to write the result into.
    ``max_decoded_bytes`` bounds the round's memory when its template comes from the
    first update (no ``base``); see :func:`tensorwire.decode`. Returns the result in the
    structure of ``base`` (or of the first update).
    """
    _check_on_mismatch(on_mismatch)
    if isinstance(updates, (str, bytes, bytearray, memoryview, Mapping)):
        raise InputError("updates must be a sequence of payloads or tensor structures")
    if method != "mean" and weights is not None:
        raise InputError(f"method={method!r} is unweighted: pass weights=None")
    admission = Admission(
        key=key, keys=keys, trusted_keys=trusted_keys, max_age=max_age, seen_nonces=seen_nonces
    )
    prepared = [_prepare(i, u, admission) for i, u in enumerate(updates)]
    if weights is None or isinstance(weights, str):
        given: list[Any] = [weights] * len(prepared)
    else:
        given = list(weights)
        if len(given) != len(prepared):
            raise InputError(f"{len(given)} weights for {len(prepared)} updates")

    # Updates refused before the core sees them: not admitted, malformed records, another
    # round. An admitted update's nonce and signer count as used for the later ones.
    args = []
    admitted: list[int] = []
    first = None
    for i, (p, w) in enumerate(zip(prepared, given)):
        refusal = p.refusal or admission.refusal(p.payload)
        if refusal is not None:
            _report(on_mismatch, i, refusal, authentication=True)
            continue
        weight, reason = _weight(p, w, i)
        reason = p.problem or reason or _round_reason(p.info, round)
        if reason is not None:
            _report(on_mismatch, i, reason)
            continue
        admission.claim(p.payload)
        first = p if first is None else first
        args.append(p.arg(weight, i))
        admitted.append(i)
    template = _template(base, first, max_decoded_bytes)
    arrays, result = _outputs(template, out)
    refused, _norms, _scales, computed = _core.aggregate(
        _specs(template),
        template.base_id,
        template.base_views,
        args,
        [byte_view(a) for a in arrays],
        clip_norm,
        max_norm,
        accumulate,
        method,
        verify,
        on_mismatch != "raise",
        out is None,
    )
    for i, reason in refused:
        _report(on_mismatch, i, reason)
    if not computed:
        raise InputError("nothing to aggregate: every update was refused")
    refused_indices = {i for i, _ in refused}
    for i in admitted:
        if i not in refused_indices:
            admission.remember(prepared[i].payload)
    return result


class Aggregator:
    """Streaming FedAvg for a server that receives updates one at a time.

    ``Aggregator(base=global_model)`` (or ``template=`` a structure with the round's
    tensors when there is no base), then ``add(payload, weight)`` per update and
    ``result()`` at the end. Running sums take one model of float32 (float64 for
    float64 and integer tensors, or with ``accumulate="float64"``); each ``add`` decodes
    tensor by tensor with the GIL released. Options as for :func:`aggregate`; without
    ``base`` or ``template`` the first update fixes the round's tensors (its declared
    size bounded by ``max_decoded_bytes``).

    ``key``, ``keys``, ``trusted_keys``, ``max_age`` and ``seen_nonces`` admit updates
    by who sent them and when, as for :func:`aggregate`: the round is this instance (one
    update per signer, no nonce twice); ``seen_nonces`` carries the nonces of accepted
    updates into the next round's Aggregator.

    ``add`` surveys the update before adding anything: a refused update (see
    :func:`aggregate`) or a bad payload leaves the sums bit for bit as they were (and
    ``seen_nonces`` as it was). ``added`` lists ``(index, client, weight, norm, scale)``
    of each accepted update, ``signers`` their signers, and ``skipped`` lists ``(index,
    reason)``; ``add`` returns whether the update was added.

    Sharded rounds (docs/federated.md, "Partial aggregates"): ``partial()`` writes what
    the aggregator holds (its sums, total weight, count, round, base id, the content
    ids, signers and nonces of its updates) as a payload, and ``merge(partial)`` adds
    another aggregator's partial into this one, as if its updates had been added here;
    ``merged`` lists ``(index, count, total_weight)`` of each partial merged.
    """

    def __init__(
        self,
        *,
        base: Any = None,
        template: Any = None,
        clip_norm: Optional[float] = None,
        max_norm: Optional[float] = None,
        on_mismatch: OnMismatch = "raise",
        round: Optional[int] = None,
        accumulate: str = "auto",
        verify: bool = True,
        max_decoded_bytes: Optional[int] = None,
        key: Any = None,
        keys: Optional[Keys] = None,
        trusted_keys: Optional[Iterable[Any]] = None,
        max_age: Optional[float] = None,
        seen_nonces: Optional[MutableSet[bytes]] = None,
    ) -> None:
        _check_on_mismatch(on_mismatch)
        self._admission = Admission(
            key=key, keys=keys, trusted_keys=trusted_keys, max_age=max_age, seen_nonces=seen_nonces
        )
        self._options = (clip_norm, max_norm, accumulate, verify)
        self._on_mismatch = on_mismatch
        self._round = round
        self._max_decoded_bytes = max_decoded_bytes
        self._template: _Template | None = None
        self._core: Any = None
        self._seen = 0
        self.added: list[tuple[int, Optional[str], float, float, float]] = []
        self.skipped: list[tuple[int, str]] = []
        self._signers: list[Optional[bytes]] = []
        self._merged_signers: list[bytes] = []
        self.merged: list[tuple[int, int, float]] = []
        if base is not None:
            self._start(_template(base, None, None))
        elif template is not None:
            self._start(_template(None, _prepare(0, template), max_decoded_bytes))

    def _start(self, template: _Template) -> None:
        self._core = self._new_core(template)
        self._template = template

    def _new_core(self, template: _Template) -> Any:
        clip_norm, max_norm, accumulate, verify = self._options
        return _core.Accumulator(
            _specs(template), template.base_id, clip_norm, max_norm, accumulate, verify
        )

    def add(self, update: Any, weight: Union[str, float, None] = None) -> bool:
        """Add one update (payload or tensor structure) with ``weight`` (1 by default;
        ``"samples"`` uses the count recorded by ``encode_update``). Returns False when
        the round refused it (see ``on_mismatch``), whether for what it holds or for who
        sent it (an :class:`AuthenticationError` under ``on_mismatch="raise"``)."""
        index = self._seen
        self._seen += 1
        p = _prepare(index, update, self._admission)
        refusal = p.refusal or self._admission.refusal(p.payload)
        if refusal is not None:
            self.skipped.append((index, refusal))
            _report(self._on_mismatch, index, refusal, authentication=True)
            return False
        w, reason = _weight(p, weight, index)
        reason = p.problem or reason or _round_reason(p.info, self._round)
        norm = scale = math.nan
        if reason is None:
            if self._core is None:
                self._start(_template(None, p, self._max_decoded_bytes))
            assert self._template is not None
            reason, norm, scale = self._core.add(p.arg(w, index), self._template.base_views)
        if reason is not None:
            self.skipped.append((index, reason))
            _report(self._on_mismatch, index, reason)
            return False
        self._admission.claim(p.payload)
        self._admission.remember(p.payload)
        client = None if p.info is None else p.info.client
        self.added.append((index, client, w, norm, scale))
        self._signers.append(None if p.payload is None else p.payload.signer)
        return True

    def partial(self, *, codec: str = "raw", key: Any = None, signing_key: Any = None) -> bytes:
        """This aggregator's partial aggregate: a payload holding its running sums (in
        the accumulator's precision, bit for bit), total weight and count, its round and
        base id, the round's tensors and structure, and the content ids, signers and
        nonces of the updates it counts, marked as a partial (it cannot be added as an
        update). Another server's :meth:`merge` adds it into its own sums.

        ``codec``: how the sums are stored, lossless only (``"raw"``, ``"zstd"``,
        ``"shuffle+zstd"``...). ``key`` authenticates the payload and ``signing_key``
        signs it (:func:`tensorwire.encode`), for the server that merges it."""
        return self._core_with_template().partial(
            *self._partial_args(),
            codec,
            optional_secret(key, "key"),
            optional_secret(signing_key, "signing_key"),
        )

    def partial_chunks(
        self,
        max_bytes: int,
        *,
        codec: str = "raw",
        payload_id: Optional[bytes] = None,
        key: Any = None,
        signing_key: Any = None,
    ) -> Chunks:
        """The payload :meth:`partial` writes, as chunks of at most ``max_bytes`` bytes
        (as :func:`tensorwire.encode_chunks` makes them: data chunks first, the header's
        last; a :class:`Reassembler` rebuilds :meth:`partial`'s bytes exactly), each made
        when it is asked for, straight from the running sums: the payload is never held
        whole, so publishing a partial costs no second model (with ``codec="raw"``; a
        compressing codec codes the sums when the chunks start).

        Until the last chunk is made (or the chunks are dropped), :meth:`add` and
        :meth:`merge` raise: nothing may change the sums being read. ``key``
        authenticates the payload and every chunk, ``signing_key`` signs the payload;
        ``payload_id`` (16 bytes) as for :func:`tensorwire.chunk`."""
        return Chunks(
            self._core_with_template().partial_chunks(
                *self._partial_args(),
                codec,
                max_bytes,
                payload_id,
                optional_secret(key, "key"),
                optional_secret(signing_key, "signing_key"),
            )
        )

    def _core_with_template(self) -> Any:
        if self._core is None or self._template is None:
            raise InputError(
                "no partial aggregate yet: this aggregator has no tensors (give base= or "
                "template=, or add an update first)"
            )
        return self._core

    def _partial_args(self) -> tuple[Optional[int], list[bytes], list[bytes], Optional[str]]:
        """The round number, signers, nonces and structure a partial aggregate holds."""
        assert self._template is not None
        signers = [s for s in self._signers if s is not None] + self._merged_signers
        return self._round, signers, self._admission.nonces, self._template.structure

    def merge(
        self,
        partial: Any,
        *,
        key: Any = None,
        keys: Optional[Keys] = None,
        trusted_keys: Optional[Iterable[Any]] = None,
    ) -> bool:
        """Merge another aggregator's :meth:`partial` into this one: its sums, weight,
        count and updates count as if its updates had been added here. Returns False
        when it is refused (through ``on_mismatch``, as updates are), changing nothing.

        It is refused when it is not a partial aggregate (a client update, a malformed
        record), is of another round or base, another template (names, dtypes, shapes),
        another ``accumulate``, ``clip_norm`` or ``max_norm``; when it counts an update
        already counted here (a content id), or one the round's admission refuses (a
        nonce seen before; with ``trusted_keys``, an update not signed by an enrolled
        key or a second one by a signer; with keys or ``max_age``, an unauthenticated
        one); when its sums hold a value that is not finite or above the bounds it
        declares, or could overflow. A corrupt payload raises. The partial is read one
        tensor at a time (no second model in memory) and checked whole before anything
        is added. Into an aggregator that has no tensors yet, the first partial brings
        them (bounded by ``max_decoded_bytes``).

        ``key``/``keys``/``trusted_keys`` authenticate the partial itself: only one made
        with one of those keys, or signed by one of those servers, is accepted (an
        :class:`AuthenticationError` under ``on_mismatch="raise"``)."""
        index = self._seen
        self._seen += 1
        payload, refusal = parse_payload(
            None, partial, reader_keys(key, keys), trusted(trusted_keys)
        )
        if payload is None:
            assert refusal is not None
            self.skipped.append((index, refusal))
            _report(self._on_mismatch, index, refusal, True, _PARTIAL)
            return False
        p, reason = _core.read_partial(payload)
        core, template = self._core, self._template
        if p is not None:
            reason = self._partial_reason(p)
        if p is not None and reason is None and core is None:
            # The first partial fixes the round's tensors, as the first update would.
            if p.base_id is not None:
                reason = (
                    f"it was aggregated against base {p.base_id}, and this aggregator has "
                    "no base (pass base=)"
                )
            else:
                payload.decoded_bytes(None, True, self._max_decoded_bytes)
                specs = [(n, dt, tuple(shape)) for n, dt, shape in p.specs()]
                template = _Template(specs, p.structure, None, None, None)
                core = self._new_core(template)
        if p is not None and reason is None:
            reason = core.merge(p)
        if reason is not None:
            self.skipped.append((index, reason))
            _report(self._on_mismatch, index, reason, False, _PARTIAL)
            return False
        assert p is not None
        self._core, self._template = core, template
        signers = p.signers()
        self._admission.claim_partial(signers, p.nonces())
        self._merged_signers.extend(signers)
        self.merged.append((index, int(p.count), float(p.total_weight)))
        return True

    def _partial_reason(self, p: Any) -> Optional[str]:
        """Why the round refuses the partial ``p`` before its sums are looked at: its
        round, or the admission of the updates it counts."""
        if p.round != self._round:
            return f"it is a partial aggregate of round {p.round}, this is round {self._round}"
        return self._admission.partial_refusal(int(p.count), p.signers(), p.nonces())

    @property
    def signers(self) -> list[Optional[bytes]]:
        """The signer of each accepted update, in the order of ``added``: its 32-byte
        Ed25519 public key, or None for an unsigned update."""
        return list(self._signers)

    @property
    def count(self) -> int:
        """Number of updates added so far."""
        return 0 if self._core is None else int(self._core.count)

    @property
    def total_weight(self) -> float:
        """Sum of the weights added so far."""
        return 0.0 if self._core is None else float(self._core.total_weight)

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
