//! Bindings of chunk framing: `chunk`, `encode_chunks` and `chunk_info`, each with an
//! optional shared key that authenticates the pieces (the `Reassembler` is in
//! [`super::reassembler`]).
//!
//! Each chunk is written straight into a new `bytes` object, so no chunk is copied twice.
//!
//! Locking: the iterators (and the reassembler) keep their state in a `Mutex`, which is
//! only ever locked with the GIL released (inside `py.detach`), and the GIL is only
//! taken back (`Python::attach`, to allocate a `bytes`) while holding it. A thread that
//! holds the GIL therefore never waits for the mutex, and no two threads can deadlock.

use std::sync::{Mutex, MutexGuard};

use super::buffer::Buffer;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::arrays::Tensors;
use super::container::EncodeArgs;
use super::{catch, new_bytes, to_py, InputError};
use crate::chunk::{
    check_crc, id_hex, ChunkHeader, ChunkPlan, ChunkStream, PayloadId, PieceKey, CHUNK_HEADER_LEN,
    TAG_LEN,
};
use crate::format::{self, EncodeOptions};
use crate::trust::{self, Key};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic never happens while the state is being changed halfway; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Make a new `bytes` of `len` bytes (taking the GIL for the allocation only) and fill it.
fn fill_new_bytes(
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> crate::error::Result<()>,
) -> PyResult<Py<PyBytes>> {
    let (obj, ptr) = Python::attach(|py| new_bytes(py, len))?;
    // SAFETY: the object is fresh, not shared yet, and exactly `len` bytes long.
    fill(unsafe { std::slice::from_raw_parts_mut(ptr, len) }).map_err(to_py)?;
    Ok(obj)
}

pub(super) fn size_arg(name: &str, v: i128) -> PyResult<u64> {
    u64::try_from(v)
        .map_err(|_| InputError::new_err(format!("{name} must be a non-negative int, got {v}")))
}

pub(super) fn id_arg(id: Option<&[u8]>) -> PyResult<Option<PayloadId>> {
    id.map(|b| {
        PayloadId::try_from(b).map_err(|_| {
            InputError::new_err(format!("payload_id must be 16 bytes, got {}", b.len()))
        })
    })
    .transpose()
}

/// The user key `key=` (32 bytes), if given.
fn user_key_arg(key: Option<&[u8]>) -> PyResult<Option<Key>> {
    key.map(|k| trust::key_from(k).map_err(to_py)).transpose()
}

/// The piece key of the user key `key=` (32 bytes), if given.
pub(super) fn key_arg(key: Option<&[u8]>) -> PyResult<Option<PieceKey>> {
    Ok(user_key_arg(key)?.map(|k| PieceKey::new(&k)))
}

/// The chunks of an in-memory payload, each a new `bytes` object made on demand.
#[pyclass(frozen, module = "tensorwire._core")]
struct Chunks {
    plan: ChunkPlan,
    next: Mutex<u32>,
    blob: Buffer,
}

#[pymethods]
impl Chunks {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let payload = self.blob.bytes();
        py.detach(|| {
            catch(|| {
                let mut next = lock(&self.next);
                if *next >= self.plan.geometry.count {
                    return Ok(None);
                }
                let i = *next;
                let out = fill_new_bytes(self.plan.chunk_len(i), |out| {
                    self.plan.write(payload, i, out);
                    Ok(())
                })?;
                *next += 1;
                Ok(Some(out))
            })
        })
    }

    /// Chunks not produced yet.
    fn __len__(&self, py: Python<'_>) -> usize {
        (self.plan.geometry.count - py.detach(|| *lock(&self.next))) as usize
    }

    /// Index of the chunk the next call produces (in order here), None when all were.
    #[getter]
    fn next_index(&self, py: Python<'_>) -> Option<u32> {
        let next = py.detach(|| *lock(&self.next));
        (next < self.plan.geometry.count).then_some(next)
    }

    /// The payload id written into every chunk (hex).
    #[getter]
    fn payload_id(&self) -> String {
        id_hex(&self.plan.payload_id)
    }

    /// Number of chunks in all.
    #[getter]
    fn count(&self) -> u32 {
        self.plan.geometry.count
    }

    /// Length of the payload.
    #[getter]
    fn total_len(&self) -> u64 {
        self.plan.geometry.total
    }
}

/// Cut a payload (any bytes-like object) into chunks of at most `max_bytes` bytes, each
/// authenticated with `key` when one is given (which also reads a payload
/// authenticated with it as a container).
#[pyfunction]
#[pyo3(signature = (blob, max_bytes, payload_id=None, key=None))]
fn chunk(
    py: Python<'_>,
    blob: &Bound<'_, PyAny>,
    max_bytes: i128,
    payload_id: Option<&[u8]>,
    key: Option<&[u8]>,
) -> PyResult<Chunks> {
    let max_bytes = size_arg("max_bytes", max_bytes)?;
    let payload_id = id_arg(payload_id)?;
    let key = user_key_arg(key)?;
    let buf = Buffer::get(blob)?;
    let data = buf.bytes();
    let plan = py.detach(|| {
        catch(|| ChunkPlan::new(data, max_bytes, payload_id, key.as_ref()).map_err(to_py))
    })?;
    Ok(Chunks {
        plan,
        next: Mutex::new(0),
        blob: buf,
    })
}

/// What a streamed payload's chunks are made from, kept alive and in place while they
/// are made: the tensors given to `encode_chunks`, or an aggregator's sums
/// (`Accumulator.partial_chunks`).
pub(super) enum StreamSource {
    Tensors(#[allow(dead_code)] Tensors),
    Partial(#[allow(dead_code)] super::partial::Held),
}

/// A stream and what it borrows from; the stream is declared first, so it is dropped
/// before the memory it borrows.
pub(super) struct LiveStream {
    stream: ChunkStream<'static>,
    _source: StreamSource,
}

impl LiveStream {
    /// # Safety
    /// `stream` must borrow only memory that `source` keeps alive and in place; the
    /// stream is dropped before the source.
    pub(super) unsafe fn new(stream: ChunkStream<'static>, source: StreamSource) -> LiveStream {
        LiveStream {
            stream,
            _source: source,
        }
    }
}

/// `stream` as if it borrowed nothing: only for [`LiveStream::new`].
///
/// # Safety
/// See [`LiveStream::new`].
pub(super) unsafe fn unbound(stream: ChunkStream<'_>) -> ChunkStream<'static> {
    // SAFETY: the caller's promise.
    unsafe { std::mem::transmute::<ChunkStream<'_>, ChunkStream<'static>>(stream) }
}

/// The chunks of a payload being encoded, produced one at a time from the tensors (or
/// an aggregator's sums); what they are made from is let go once the last is made.
#[pyclass(frozen, module = "tensorwire._core")]
pub(super) struct EncodedChunks {
    live: Mutex<Option<LiveStream>>,
    payload_id: PayloadId,
    count: u32,
    total: u64,
}

impl EncodedChunks {
    pub(super) fn new(live: LiveStream) -> EncodedChunks {
        EncodedChunks {
            payload_id: live.stream.payload_id(),
            count: live.stream.geometry().count,
            total: live.stream.total_len(),
            live: Mutex::new(Some(live)),
        }
    }
}

#[pymethods]
impl EncodedChunks {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let (out, done) = py.detach(|| {
            catch(|| {
                let mut live = lock(&self.live);
                let Some(len) = live.as_ref().and_then(|l| l.stream.next_len()) else {
                    return Ok((None, None));
                };
                let l = live.as_mut().expect("checked above");
                let out = fill_new_bytes(len, |out| l.stream.write_next(out).map(|_| ()))?;
                // The last chunk made: let go of the tensors (or the aggregator's sums).
                let done = if l.stream.remaining() == 0 {
                    live.take()
                } else {
                    None
                };
                Ok((Some(out), done))
            })
        })?;
        drop(done); // with the GIL held: the tensors are Python objects
        Ok(out)
    }

    /// Chunks not produced yet.
    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| {
            lock(&self.live)
                .as_ref()
                .map_or(0, |l| l.stream.remaining())
        }) as usize
    }

    /// Index of the chunk the next call produces (the data chunks come first, the
    /// header's last), None when all were.
    #[getter]
    fn next_index(&self, py: Python<'_>) -> Option<u32> {
        py.detach(|| {
            lock(&self.live)
                .as_ref()
                .and_then(|l| l.stream.next_index())
        })
    }

    /// The payload id written into every chunk (hex).
    #[getter]
    fn payload_id(&self) -> String {
        id_hex(&self.payload_id)
    }

    /// Number of chunks in all.
    #[getter]
    fn count(&self) -> u32 {
        self.count
    }

    /// Length of the payload.
    #[getter]
    fn total_len(&self) -> u64 {
        self.total
    }
}

/// Encode tensors into chunks of at most `max_bytes` bytes without holding the payload.
/// With `key` the payload is authenticated and each chunk too; `signing_key` and
/// `encrypt` as for `encode`.
#[pyfunction]
#[pyo3(signature = (args, max_bytes, metadata=None, payload_id=None, key=None, signing_key=None, encrypt=None))]
#[allow(clippy::too_many_arguments)]
fn encode_chunks<'py>(
    py: Python<'py>,
    args: EncodeArgs<'py>,
    max_bytes: i128,
    metadata: Option<&str>,
    payload_id: Option<&[u8]>,
    key: Option<&[u8]>,
    signing_key: Option<&[u8]>,
    encrypt: Option<&str>,
) -> PyResult<EncodedChunks> {
    let max_bytes = size_arg("max_bytes", max_bytes)?;
    let payload_id = id_arg(payload_id)?;
    let signing = super::trust::signing(key, signing_key)?;
    let encrypt = super::trust::encrypt_arg(encrypt)?;
    let key = key_arg(key)?;
    let held = args.tensors()?;
    let inputs = held.inputs(py);
    let opts = EncodeOptions {
        auth: Some(&signing),
        encrypt,
        ..args.options(metadata)
    };
    let stream = py.detach(|| {
        catch(|| {
            let prepared = format::prepare(&inputs, &opts).map_err(to_py)?;
            ChunkStream::new(prepared, max_bytes, payload_id, key).map_err(to_py)
        })
    })?;
    drop(inputs);
    // SAFETY: the stream borrows only the tensors' bytes, which live in numpy arrays
    // that `held` keeps alive and in place.
    let live = unsafe { LiveStream::new(unbound(stream), StreamSource::Tensors(held)) };
    Ok(EncodedChunks::new(live))
}

/// The header of one chunk, as a dict (checks the header and, when `check_crc`, its
/// CRC: skip it only for a chunk a `Reassembler` has just accepted, which checked it).
#[pyfunction]
#[pyo3(signature = (chunk, check_crc=true))]
fn chunk_info<'py>(
    py: Python<'py>,
    chunk: &Bound<'py, PyAny>,
    check_crc: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let buf = Buffer::get(chunk)?;
    let data = buf.bytes();
    let h = ChunkHeader::parse(data)
        .and_then(|h| match check_crc {
            true => self::check_crc(data, &h).map(|()| h),
            false => Ok(h),
        })
        .map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("payload_id", id_hex(&h.payload_id))?;
    d.set_item("kind", h.kind.name())?;
    d.set_item("index", h.index)?;
    d.set_item("count", h.count)?;
    d.set_item("total_len", h.total)?;
    d.set_item("offset", h.offset)?;
    d.set_item("body_len", h.body_len)?;
    d.set_item("authenticated", h.authenticated)?;
    d.set_item("tag_len", if h.authenticated { TAG_LEN } else { 0 })?;
    d.set_item(
        "digest",
        h.digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )?;
    Ok(d)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CHUNK_HEADER_LEN", CHUNK_HEADER_LEN)?;
    m.add_function(wrap_pyfunction!(chunk, m)?)?;
    m.add_function(wrap_pyfunction!(encode_chunks, m)?)?;
    m.add_function(wrap_pyfunction!(chunk_info, m)?)?;
    m.add_class::<Chunks>()?;
    m.add_class::<EncodedChunks>()?;
    Ok(())
}
