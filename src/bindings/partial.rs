//! Bindings of partial aggregates: `read_partial` (a parsed payload checked as a partial
//! aggregate, the `Partial` class), and the work behind `Accumulator.partial` and
//! `Accumulator.merge` (the methods themselves sit in `aggregate.rs`, with the class).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::aggregate::Accumulator;
use super::chunk::{unbound, EncodedChunks, LiveStream, StreamSource};
use super::payload::Payload;
use super::{catch, detached, new_bytes, to_py, InputError};
use crate::chunk::ChunkStream;
use crate::fedavg::partial::{Nonce, PartialWriter, SignerId};
use crate::fedavg::{Accumulator as CoreAccumulator, Extras, Partial as CorePartial};
use crate::format::hex32;

/// A payload checked as a partial aggregate (see `tensorwire.Aggregator.merge`): its
/// record and ids; the values of its sums are checked when it is merged.
#[pyclass(frozen, module = "tensorwire._core")]
pub(super) struct Partial {
    payload: Py<Payload>,
    inner: CorePartial,
}

#[pymethods]
impl Partial {
    /// The round number it was made for, or None.
    #[getter]
    fn round(&self) -> Option<i64> {
        self.inner.number
    }

    /// Updates counted.
    #[getter]
    fn count(&self) -> u64 {
        self.inner.count
    }

    /// Sum of their weights.
    #[getter]
    fn total_weight(&self) -> f64 {
        self.inner.total_weight
    }

    /// The base id of its round, or None.
    #[getter]
    fn base_id(&self) -> Option<String> {
        self.inner.round.base_id().map(hex32)
    }

    /// Its round's structure JSON, or None for a flat mapping.
    #[getter]
    fn structure(&self) -> Option<&str> {
        self.inner.structure.as_deref()
    }

    /// Its round's tensors: (name, dtype, shape).
    fn specs(&self) -> Vec<(String, &'static str, Vec<u64>)> {
        self.inner
            .round
            .tensors()
            .iter()
            .map(|s| (s.name.clone(), s.dtype.name(), s.shape.clone()))
            .collect()
    }

    /// The content ids of the updates it counts (lowercase hex).
    fn content_ids(&self) -> Vec<String> {
        self.inner.content_ids.iter().map(hex32).collect()
    }

    /// The signers of the signed updates it counts (32 bytes each).
    fn signers<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .signers
            .iter()
            .map(|s| PyBytes::new(py, s))
            .collect()
    }

    /// The nonces of the authenticated updates it counts (16 bytes each).
    fn nonces<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .nonces
            .iter()
            .map(|n| PyBytes::new(py, n))
            .collect()
    }
}

/// Check the parsed `payload` as a partial aggregate: (the `Partial`, None), or (None,
/// why it is not a well-formed one). A corrupt payload (an id tensor's checksum) raises.
#[pyfunction]
fn read_partial(
    py: Python<'_>,
    payload: Bound<'_, Payload>,
) -> PyResult<(Option<Partial>, Option<String>)> {
    catch(|| {
        let p = payload.get();
        let read = detached(py, || CorePartial::read(p.memory.bytes(), &p.layout))?;
        Ok(match read {
            Ok(inner) => (
                Some(Partial {
                    payload: payload.unbind(),
                    inner,
                }),
                None,
            ),
            Err(why) => (None, Some(why)),
        })
    })
}

fn fixed<const N: usize>(items: &[Vec<u8>], what: &str) -> PyResult<Vec<[u8; N]>> {
    items
        .iter()
        .map(|b| {
            b.as_slice().try_into().map_err(|_| {
                InputError::new_err(format!("{what} must be {N} bytes, not {}", b.len()))
            })
        })
        .collect()
}

/// `Accumulator.partial`: the accumulator's partial aggregate as a new `bytes` object,
/// written in place; the aggregator is locked meanwhile (with the GIL held while it
/// waits: no holder of the lock ever needs the GIL).
#[allow(clippy::too_many_arguments)]
pub(super) fn write<'py>(
    py: Python<'py>,
    acc: &Accumulator,
    round: Option<i64>,
    signers: Vec<Vec<u8>>,
    nonces: Vec<Vec<u8>>,
    structure: Option<String>,
    codec: &str,
    key: Option<&[u8]>,
    signing_key: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let signing = super::trust::signing(key, signing_key)?;
    let signers: Vec<SignerId> = fixed(&signers, "a signer")?;
    let nonces: Vec<Nonce> = fixed(&nonces, "a nonce")?;
    let guard = acc.lock().map_err(to_py)?;
    let core = &*guard;
    let extras = Extras {
        round,
        signers: &signers,
        nonces: &nonces,
        structure: structure.as_deref(),
    };
    let writer = detached(py, || core.partial(&extras))?;
    let prepared = detached(py, || writer.prepare(codec, Some(&signing)))?;
    let len = prepared.total_len();
    let (bytes, ptr) = new_bytes(py, len)?;
    // SAFETY: the object is fresh, unshared, and exactly `len` bytes long.
    let out = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    detached(py, || prepared.write_into(out))?;
    Ok(bytes.into_bound(py))
}

/// What the chunks of a streamed partial aggregate are made from: the writer (ids,
/// record, the sums' bytes borrowed) and the codec spec it lays out with, and the
/// accumulator it borrows, shared with the aggregator (which refuses to change while
/// this is alive: `Accumulator::changing`). Declared in drop order: borrowers first.
pub(super) struct Held {
    _writer: Arc<PartialWriter<'static>>,
    _codec: Arc<str>,
    _acc: Arc<CoreAccumulator>,
}

/// `Accumulator.partial_chunks`: the partial aggregate `write` would make, as chunks of
/// at most `max_bytes` bytes made one at a time from the sums (raw sums are never
/// copied whole; coded ones are coded when the stream starts).
#[allow(clippy::too_many_arguments)]
pub(super) fn chunks(
    py: Python<'_>,
    acc: &Accumulator,
    round: Option<i64>,
    signers: Vec<Vec<u8>>,
    nonces: Vec<Vec<u8>>,
    structure: Option<String>,
    codec: &str,
    max_bytes: u64,
    payload_id: Option<&[u8]>,
    key: Option<&[u8]>,
    signing_key: Option<&[u8]>,
) -> PyResult<EncodedChunks> {
    let signing = super::trust::signing(key, signing_key)?;
    let piece_key = super::chunk::key_arg(key)?;
    let payload_id = super::chunk::id_arg(payload_id)?;
    let signers: Vec<SignerId> = fixed(&signers, "a signer")?;
    let nonces: Vec<Nonce> = fixed(&nonces, "a nonce")?;
    let shared: Arc<CoreAccumulator> = Arc::clone(&*acc.lock().map_err(to_py)?);
    let codec: Arc<str> = codec.into();
    let live = detached(py, || {
        let extras = Extras {
            round,
            signers: &signers,
            nonces: &nonces,
            structure: structure.as_deref(),
        };
        // SAFETY: the accumulator lives in the `Arc`'s heap memory, which `Held` keeps
        // alive and in place for as long as the stream; nobody changes it meanwhile
        // (`Accumulator::changing` refuses while another `Arc` to it exists).
        let core: &'static CoreAccumulator = unsafe { &*Arc::as_ptr(&shared) };
        let writer = Arc::new(core.partial(&extras)?);
        // SAFETY: as above, for the writer and the codec spec, kept alive in `Held`.
        let (w, c): (&'static PartialWriter<'static>, &'static str) =
            unsafe { (&*Arc::as_ptr(&writer), &*Arc::as_ptr(&codec)) };
        let prepared = w.prepare(c, Some(&signing))?;
        let stream = ChunkStream::new(prepared, max_bytes, payload_id, piece_key)?;
        let held = Held {
            _writer: writer,
            _codec: codec,
            _acc: shared,
        };
        // SAFETY: the stream borrows only the writer, the codec and the accumulator,
        // which `held` keeps alive and in place.
        Ok(unsafe { LiveStream::new(unbound(stream), StreamSource::Partial(held)) })
    })?;
    Ok(EncodedChunks::new(live))
}

/// `Accumulator.merge`: merge `partial`; None when merged, else why it is refused.
pub(super) fn merge(
    py: Python<'_>,
    acc: &Accumulator,
    partial: &Partial,
) -> PyResult<Option<String>> {
    let payload = partial.payload.get();
    detached(py, || {
        let mut guard = acc.lock()?;
        let merged = Accumulator::changing(&mut guard)?.merge(
            &partial.inner,
            payload.memory.bytes(),
            &payload.layout,
        )?;
        Ok(merged.err())
    })
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_partial, m)?)?;
    m.add_class::<Partial>()?;
    Ok(())
}
