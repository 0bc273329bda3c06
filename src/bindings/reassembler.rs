//! Binding of the `Reassembler`: chunks in, each payload out as a `bytes` object
//! allocated when its first chunk arrives and filled in place.
//!
//! Locking as in [`super::chunk`]: the state's `Mutex` is only ever locked with the GIL
//! released (inside `py.detach`), and the GIL is only taken back (`Python::attach`, to
//! allocate a `bytes`) while holding it, so no two threads can deadlock.

use std::sync::Mutex;

use super::buffer::Buffer;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyMapping};

use super::chunk::{lock, size_arg};
use super::{catch, new_bytes, to_py, InputError};
use crate::chunk::{id_hex, Limits, PayloadBuffer, Reassembler, WhenFull};
use crate::error::Error;
use crate::trust::{self, Key};

/// The user keys of `key=` (32 bytes) or `keys=` (an iterable of them, or a mapping
/// whose values they are, as `decode` takes them); none when neither is given.
fn keys_arg(key: Option<&[u8]>, keys: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Key>> {
    let one = |b: &Bound<'_, PyAny>| -> PyResult<Key> {
        let bytes: Vec<u8> = b.extract().map_err(|_| {
            InputError::new_err(format!(
                "keys must be 32-byte bytes objects, got {}",
                b.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        trust::key_from(&bytes).map_err(to_py)
    };
    match (key, keys) {
        (Some(_), Some(_)) => Err(InputError::new_err("pass key= or keys=, not both")),
        (Some(k), None) => Ok(vec![trust::key_from(k).map_err(to_py)?]),
        (None, None) => Ok(Vec::new()),
        (None, Some(keys)) => {
            let items = match keys.cast::<PyMapping>() {
                Ok(m) => m.values()?.into_any(),
                Err(_) => keys.clone(),
            };
            let keys = items
                .try_iter()
                .map_err(|_| InputError::new_err("keys= must be an iterable of 32-byte keys"))?
                .map(|k| one(&k?))
                .collect::<PyResult<Vec<Key>>>()?;
            if keys.is_empty() {
                return Err(InputError::new_err("keys= is empty: pass at least one key"));
            }
            Ok(keys)
        }
    }
}

/// A reassembled payload's `bytes` object, written in place.
struct BytesBuffer {
    obj: Py<PyBytes>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the pointer is into the `bytes` object that `obj` owns; it is only used by the
// reassembler that holds the buffer, under its mutex, and `Py` is `Send`.
unsafe impl Send for BytesBuffer {}

impl PayloadBuffer for BytesBuffer {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes owned by `obj`; the reassembler reads only bytes it wrote.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; nobody else sees the object until the payload is complete.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// One row of `Reassembler.missing`: payload id hex, received, count, seconds idle, indices.
type MissingRow = (String, u32, u32, f64, Vec<u32>);

/// Puts chunks back together: ``add(chunk)`` returns the whole payload (``bytes``) when
/// its last missing chunk arrives, else ``None``.
///
/// Chunks may come in any order, duplicated, and interleaved with other payloads'. Each
/// body is written once into a ``bytes`` object allocated for its payload when the
/// payload's first chunk arrives. A finished payload is verified before it is returned:
/// a tensorwire payload by its own checksums, other bytes by the blake3 digest in their
/// chunks. ``verify=False`` checks only a tensorwire payload's header (leaving tensor
/// checksums to ``decode``, which checks them by default) and other bytes' chunk CRCs.
///
/// Limits: ``max_payload_bytes`` (larger payloads are refused at their first chunk);
/// ``max_pending_bytes`` bounds what partial payloads cost (each charged, from its first
/// chunk on, its buffer as allocated, its bookkeeping, and the alternative chunk bodies
/// it holds); when a new payload does not fit, ``when_full="evict"`` drops the least
/// recently active partial payloads and ``"refuse"`` refuses the new one with
/// ``FormatError``. A partial payload that gets no new chunk for ``timeout`` seconds is
/// dropped (on the next ``add`` or ``evict_expired``). Chunks of a payload finished less
/// than ``timeout`` ago are ignored as duplicates. ``now`` arguments are
/// ``time.monotonic()`` seconds (the default). ``missing(idle=, limit=)`` names the
/// chunks that stalled payloads still lack, for a receiver to ask its sender to resend.
///
/// Without keys anyone who sees a payload id can send chunks under it: chunks of another
/// geometry form another payload (at most 4 per id, the least recently active making
/// room), and a chunk whose body differs from the one received for its index is kept
/// beside it (at most 4 per payload, counted in ``stats["conflicts"]``) until the payload
/// completes, when the combination that verifies is returned. A corrupt or inconsistent
/// chunk raises ``IntegrityError`` or ``FormatError`` and changes nothing else; a payload
/// that completes but fails verification is dropped with ``IntegrityError``.
///
/// With ``key=`` (32 bytes; or ``keys=``, several, as a list or a ``{key_id: key}``
/// mapping) only chunks tagged with one of the keys are accepted (``tw.chunk(...,
/// key=)``). Every chunk's tag is checked first, before anything else is looked up or
/// changed: a chunk that is untagged, tagged with another key or altered raises
/// ``AuthenticationError`` (one that cannot be read, ``FormatError`` or
/// ``IntegrityError``), is counted in ``stats["dropped"]``, and is charged nothing — so
/// a forger who knows a payload id cannot make that payload fail. Without keys, tagged
/// chunks are accepted on their CRC (the tag is skipped).
///
/// A finished tensorwire payload that is itself authenticated (``tw.encode(key=)``) is
/// read with the same keys: the key it names must be among them and its keyed header
/// hash must match, else ``AuthenticationError``. Without keys its header cannot be
/// checked: it is returned after its chunks' CRCs, its length and its chunks' digest
/// are checked, for ``decode(key=)`` to verify (or refused with
/// ``AuthenticationError`` when different bodies were received for one of its chunks).
/// With ``trusted_keys=`` (public keys, 32 bytes or 64 hex digits each) only
/// tensorwire payloads signed by one of them complete; others are dropped with
/// ``AuthenticationError``. Safe to share between threads.
#[pyclass(frozen, module = "tensorwire._core", name = "Reassembler")]
struct PyReassembler {
    inner: Mutex<Reassembler<BytesBuffer>>,
    clock: Py<PyAny>,
}

impl PyReassembler {
    fn now(&self, py: Python<'_>, now: Option<f64>) -> PyResult<f64> {
        match now {
            Some(t) => Ok(t),
            None => self.clock.bind(py).call0()?.extract(),
        }
    }
}

#[pymethods]
impl PyReassembler {
    #[new]
    #[pyo3(signature = (*, max_pending_bytes=4 << 30, max_payload_bytes=4 << 30, timeout=60.0, when_full="evict", verify=true, key=None, keys=None, trusted_keys=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        max_pending_bytes: i128,
        max_payload_bytes: i128,
        timeout: f64,
        when_full: &str,
        verify: bool,
        key: Option<&[u8]>,
        keys: Option<&Bound<'_, PyAny>>,
        trusted_keys: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let keys = keys_arg(key, keys)?;
        let trusted = super::trust::trusted_arg(trusted_keys)?;
        let when_full = match when_full {
            "evict" => WhenFull::EvictOldest,
            "refuse" => WhenFull::Refuse,
            other => {
                return Err(InputError::new_err(format!(
                    "when_full must be \"evict\" or \"refuse\", got {other:?}"
                )))
            }
        };
        let limits = Limits {
            max_pending_bytes: size_arg("max_pending_bytes", max_pending_bytes)?,
            max_payload_bytes: size_arg("max_payload_bytes", max_payload_bytes)?,
            timeout,
            when_full,
            verify,
        };
        let inner = Reassembler::with_trust(limits, &keys, trusted.as_deref()).map_err(to_py)?;
        let clock = py.import("time")?.getattr("monotonic")?.unbind();
        Ok(PyReassembler {
            inner: Mutex::new(inner),
            clock,
        })
    }

    /// Add one chunk; the whole payload once complete, else None.
    #[pyo3(signature = (chunk, now=None))]
    fn add(
        &self,
        py: Python<'_>,
        chunk: &Bound<'_, PyAny>,
        now: Option<f64>,
    ) -> PyResult<Option<Py<PyBytes>>> {
        let now = self.now(py, now)?;
        let buf = Buffer::get(chunk)?;
        let data = buf.bytes();
        py.detach(|| {
            catch(|| {
                let added = lock(&self.inner).add_with(data, now, |len| {
                    match Python::attach(|py| new_bytes(py, len)) {
                        Ok((obj, ptr)) => Ok(BytesBuffer { obj, ptr, len }),
                        Err(_) => Err(Error::format(format!(
                            "cannot allocate {len} bytes for a payload's first chunk"
                        ))),
                    }
                });
                Ok(added.map_err(to_py)?.map(|b| b.obj))
            })
        })
    }

    /// Drop partial payloads idle for longer than the timeout; their ids (hex).
    #[pyo3(signature = (now=None))]
    fn evict_expired(&self, py: Python<'_>, now: Option<f64>) -> PyResult<Vec<String>> {
        let now = self.now(py, now)?;
        if !now.is_finite() || now < 0.0 {
            return Err(InputError::new_err(format!(
                "now must be finite non-negative seconds, got {now}"
            )));
        }
        let gone = py.detach(|| lock(&self.inner).evict_expired(now));
        Ok(gone.iter().map(id_hex).collect())
    }

    /// The partial payloads, least recently active first:
    /// (payload id hex, chunks received, chunk count, payload length).
    fn pending(&self, py: Python<'_>) -> Vec<(String, u32, u32, u64)> {
        py.detach(|| lock(&self.inner).pending())
            .into_iter()
            .map(|p| (id_hex(&p.payload_id), p.received, p.count, p.total))
            .collect()
    }

    /// The partial payloads with no new chunk for `idle` to `max_idle` seconds (None: up
    /// to the timeout), least recently active first:
    /// (payload id hex, chunks received, chunk count, seconds idle, the lowest `limit`
    /// missing chunk indices, ascending).
    #[pyo3(signature = (idle=0.0, max_idle=None, limit=1024, now=None))]
    fn missing(
        &self,
        py: Python<'_>,
        idle: f64,
        max_idle: Option<f64>,
        limit: i128,
        now: Option<f64>,
    ) -> PyResult<Vec<MissingRow>> {
        let limit = usize::try_from(size_arg("limit", limit)?).unwrap_or(usize::MAX);
        let now = self.now(py, now)?;
        let range = idle..=max_idle.unwrap_or(f64::INFINITY);
        let found = py.detach(|| lock(&self.inner).missing(now, range, limit));
        Ok(found
            .map_err(to_py)?
            .into_iter()
            .map(|m| {
                (
                    id_hex(&m.payload_id),
                    m.received,
                    m.count,
                    m.idle,
                    m.indices,
                )
            })
            .collect())
    }

    /// Bytes charged for pending payloads.
    #[getter]
    fn pending_bytes(&self, py: Python<'_>) -> u64 {
        py.detach(|| lock(&self.inner).pending_bytes())
    }

    /// Counters: completed, duplicates, rejected, dropped, expired, evicted, failed,
    /// conflicts.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| lock(&self.inner).stats());
        let d = PyDict::new(py);
        d.set_item("completed", s.completed)?;
        d.set_item("duplicates", s.duplicates)?;
        d.set_item("rejected", s.rejected)?;
        d.set_item("dropped", s.dropped)?;
        d.set_item("expired", s.expired)?;
        d.set_item("evicted", s.evicted)?;
        d.set_item("failed", s.failed)?;
        d.set_item("conflicts", s.conflicts)?;
        Ok(d)
    }

    /// Ids of the keys chunks must be tagged with (16 hex digits each; empty: any chunk
    /// is accepted on its CRC).
    #[getter]
    fn key_ids(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| {
            lock(&self.inner)
                .keys()
                .iter()
                .map(|k| trust::id_hex(&k.id()))
                .collect()
        })
    }

    /// The public keys a finished payload must be signed by (None: any signature, or
    /// none, is accepted).
    #[getter]
    fn trusted_keys<'py>(&self, py: Python<'py>) -> Option<Vec<Bound<'py, PyBytes>>> {
        let trusted = py.detach(|| lock(&self.inner).trusted().map(<[_]>::to_vec));
        trusted.map(|t| t.iter().map(|pk| PyBytes::new(py, pk)).collect())
    }

    #[getter]
    fn max_pending_bytes(&self, py: Python<'_>) -> u64 {
        py.detach(|| lock(&self.inner).limits().max_pending_bytes)
    }

    #[getter]
    fn max_payload_bytes(&self, py: Python<'_>) -> u64 {
        py.detach(|| lock(&self.inner).limits().max_payload_bytes)
    }

    #[getter]
    fn timeout(&self, py: Python<'_>) -> f64 {
        py.detach(|| lock(&self.inner).limits().timeout)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (n, bytes) = py.detach(|| {
            let r = lock(&self.inner);
            (r.pending().len(), r.pending_bytes())
        });
        format!("<tensorwire.Reassembler {n} pending payloads, {bytes} bytes held>")
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyReassembler>()
}
