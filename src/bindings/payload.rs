//! The `Payload` reader: a payload parsed once over a buffer, its header's facts, its
//! checksums verified, its tensors decoded into new arrays, views or the caller's arrays.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::arrays::{array_bytes, array_spec, descr_of, new_array, out_memory};
use super::buffer::Buffer;
use super::{catch, detached, new_bytes, no_memory, to_py, FormatError, IntegrityError};
use crate::dtype::DType;
use crate::error::Error;
use crate::fedavg::UpdateRecord;
use crate::format::{self, default_max_decoded_bytes, Layout, TensorView};
use crate::format::{hex32, parse_hex32};

/// An update record as Python sees it (see `Payload.update_record`).
type RecordTuple = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<f64>,
);

/// The memory a payload is read from: the caller's buffer when nobody can write to it
/// (bytes, read-only memoryviews and maps), else a private copy made once, so that what
/// is verified is what is decoded and returned.
pub(super) struct Memory {
    _owner: Owner,
    ptr: *const u8,
    len: usize,
}

// Held for as long as the memory is read, never read through.
#[allow(dead_code)]
enum Owner {
    Buffer(Buffer),
    Copy(Py<PyBytes>),
}

// SAFETY: the pointer is into memory that `_owner` keeps alive and in place (a buffer
// export, or a bytes object nobody else holds); it is only ever read.
unsafe impl Send for Memory {}
// SAFETY: as above; shared reads only.
unsafe impl Sync for Memory {}

impl Memory {
    /// The memory of `obj`, copied when it is writable.
    pub(super) fn of(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Memory> {
        let buf = Buffer::get(obj)?;
        let data = buf.bytes();
        if buf.readonly() {
            let (ptr, len) = (data.as_ptr(), data.len());
            return Ok(Memory {
                _owner: Owner::Buffer(buf),
                ptr,
                len,
            });
        }
        let len = data.len();
        let (copy, ptr) = new_bytes(py, len)?;
        // SAFETY: the new object is `len` bytes, unshared; `data` stays exported by `buf`.
        let dst = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let src = SendSlice(data);
        py.detach(|| dst.copy_from_slice(src.0));
        Ok(Memory {
            _owner: Owner::Copy(copy),
            ptr,
            len,
        })
    }

    /// The bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: see the type's Send/Sync notes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A borrowed slice handed to a thread without the GIL (its owner is held meanwhile).
struct SendSlice<'a>(&'a [u8]);
// SAFETY: plain bytes, read while their owner is kept alive by the caller.
unsafe impl Send for SendSlice<'_> {}

/// A parsed payload over a buffer (bytes, bytearray, memoryview or mmap). Parsing
/// validates the preamble, the header and every coded tensor's framing; tensor bytes are
/// only read by `verify` and `arrays`. A writable buffer is copied first (see `Memory`).
#[pyclass(frozen, module = "tensorwire._core")]
pub(super) struct Payload {
    pub(super) memory: Memory,
    pub(super) layout: Layout,
}

impl Payload {
    /// The tensors `indices` (all when None), checked to exist.
    fn selection(&self, indices: &Option<Vec<usize>>) -> PyResult<usize> {
        let n = self.layout.entries.len();
        if let Some(bad) = indices.iter().flatten().find(|&&i| i >= n) {
            return Err(PyValueError::new_err(format!("no tensor at index {bad}")));
        }
        Ok(indices.as_ref().map_or(n, Vec::len))
    }

    fn limit(&self, max_decoded_bytes: Option<u64>) -> u64 {
        max_decoded_bytes.unwrap_or_else(|| default_max_decoded_bytes(self.memory.len))
    }
}

#[pymethods]
impl Payload {
    /// Parse `buffer`; `update`, when it is update number `update` of an aggregation,
    /// is named by every error (the `update` attribute and the message). `keys`, as
    /// (expected key id or None, 32-byte key) pairs, and `trusted_keys` (32-byte public
    /// keys) say what is accepted (FORMAT.md section 10, "Reading").
    #[new]
    #[pyo3(signature = (buffer, update=None, keys=None, trusted_keys=None))]
    fn new(
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        update: Option<usize>,
        keys: Option<Vec<(Option<String>, Vec<u8>)>>,
        trusted_keys: Option<Vec<Vec<u8>>>,
    ) -> PyResult<Self> {
        catch(|| {
            let verifier = super::trust::verifier(keys, trusted_keys)?;
            let memory = Memory::of(py, buffer).map_err(|e| match update {
                Some(i) => super::errors::in_update(py, e, i),
                None => e,
            })?;
            let data = SendSlice(memory.bytes());
            let layout = detached(py, move || {
                format::parse_with(data.0, &verifier).map_err(|e| match update {
                    Some(i) => e.in_update(i),
                    None => e,
                })
            })?;
            Ok(Payload { memory, layout })
        })
    }

    /// Per tensor: (name, dtype, shape, codec, absolute offset, stored length, decoded
    /// size, hash hex).
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.layout
            .entries
            .iter()
            .map(|e| {
                let shape = PyTuple::new(py, &e.shape)?;
                (
                    e.name.as_str(),
                    e.dtype.name(),
                    shape,
                    e.pipeline.to_string(),
                    e.start,
                    e.length,
                    e.nbytes,
                    hex32(&e.hash),
                )
                    .into_pyobject(py)
            })
            .collect()
    }

    /// Structure JSON, or None for a flat mapping.
    #[getter]
    fn structure(&self) -> Option<&str> {
        self.layout.structure.as_deref()
    }

    /// User metadata JSON, or None.
    #[getter]
    fn metadata(&self) -> Option<&str> {
        self.layout.metadata.as_deref()
    }

    /// The base id a delta payload was encoded against, or None.
    #[getter]
    fn base_id(&self) -> Option<String> {
        self.layout.base.as_ref().map(hex32)
    }

    /// The payload's content id: the blake3 of its header, which covers every tensor hash.
    #[getter]
    fn content_id(&self) -> String {
        hex32(&self.layout.content_id)
    }

    /// The signer's 32-byte public key, for a signed payload.
    #[getter]
    fn signer<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        let signer = self.layout.auth.as_ref()?.signer?;
        Some(PyBytes::new(py, &signer))
    }

    /// The id of the key an authenticated payload was made with (16 hex digits).
    #[getter]
    fn key_id(&self) -> Option<String> {
        let id = self.layout.auth.as_ref()?.key_id?;
        Some(crate::trust::id_hex(&id))
    }

    /// When an authenticated or signed payload was made, unix milliseconds.
    #[getter]
    fn created(&self) -> Option<u64> {
        self.layout.auth.as_ref().map(|a| a.created)
    }

    /// The 16-byte nonce of an authenticated or signed payload.
    #[getter]
    fn nonce<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        let auth = self.layout.auth.as_ref()?;
        Some(PyBytes::new(py, &auth.nonce))
    }

    /// What is encrypted: None, "tensors" or "all" (the header too).
    #[getter]
    fn encrypted(&self) -> Option<&'static str> {
        self.layout.encrypted().name()
    }

    /// (major, minor) format version of the writer.
    #[getter]
    fn version(&self) -> (u16, u16) {
        (crate::format::VERSION_MAJOR, self.layout.minor)
    }

    /// Length of the payload in bytes.
    fn __len__(&self) -> usize {
        self.memory.len
    }

    /// Verify the checksums of the tensors at `indices` (all, padding included, if None;
    /// the padding too with `padding`, so that parts verified one by one cover it all).
    #[pyo3(signature = (indices=None, padding=false))]
    fn verify(&self, py: Python<'_>, indices: Option<Vec<usize>>, padding: bool) -> PyResult<()> {
        self.selection(&indices)?;
        let data = SendSlice(self.memory.bytes());
        let (layout, ix) = (&self.layout, indices.as_deref());
        detached(py, move || layout.verify_padded(data.0, ix, padding))
    }

    /// Tensor names, in storage order.
    fn names(&self) -> Vec<&str> {
        self.layout
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The bytes decoding `indices` (all when None) would allocate (raw tensors count
    /// when `copied`); a FormatError when above `max_decoded_bytes` (None: the default,
    /// 256 times the payload's length plus 1 GiB).
    #[pyo3(signature = (indices=None, copied=true, max_decoded_bytes=None))]
    fn decoded_bytes(
        &self,
        indices: Option<Vec<usize>>,
        copied: bool,
        max_decoded_bytes: Option<u64>,
    ) -> PyResult<u64> {
        self.selection(&indices)?;
        self.layout
            .check_decoded_bytes(indices.as_deref(), copied, self.limit(max_decoded_bytes))
            .map_err(to_py)
    }

    /// The tensors at `indices` (all of them when None) as numpy arrays: raw tensors as
    /// read-only views of the payload (unless `copy`), the others decoded into new
    /// arrays, in parallel with the GIL released. First, before anything is allocated:
    /// the bytes to allocate are checked against `max_decoded_bytes` (None: the default)
    /// and, when `verify`, every checksum. `bases`, for delta payloads, is aligned with
    /// `indices`: each a numpy array of the tensor's dtype and shape, or None.
    ///
    /// `out`, aligned with `indices` like `bases`, gives arrays to decode into (None
    /// where a tensor gets a new array): each a writable, C-contiguous numpy array of
    /// exactly the tensor's dtype and shape, sharing no memory with another output, a
    /// base or the payload; all of them are checked before anything is decoded, and are
    /// written all or nothing (see `Layout::decode_all_or_nothing`). They are returned
    /// in their places.
    #[pyo3(signature = (indices=None, bases=None, verify=true, copy=false, max_decoded_bytes=None, out=None))]
    #[allow(clippy::too_many_arguments)]
    fn arrays<'py>(
        slf: &Bound<'py, Self>,
        indices: Option<Vec<usize>>,
        bases: Option<Vec<Option<Bound<'py, PyAny>>>>,
        verify: bool,
        copy: bool,
        max_decoded_bytes: Option<u64>,
        out: Option<Vec<Option<Bound<'py, PyAny>>>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        catch(|| {
            let py = slf.py();
            let this = slf.get();
            let layout = &this.layout;
            let data = this.memory.bytes();
            let count = this.selection(&indices)?;
            if bases.as_ref().is_some_and(|b| b.len() != count) {
                return Err(PyValueError::new_err(
                    "one base (or None) per tensor is needed",
                ));
            }
            let base_arrays = bases
                .iter()
                .flatten()
                .map(|b| b.as_ref().map(array_view).transpose())
                .collect::<PyResult<Vec<_>>>()?;
            let chosen: Vec<usize> = match &indices {
                Some(ix) => ix.clone(),
                None => (0..layout.entries.len()).collect(),
            };
            if out.as_ref().is_some_and(|o| o.len() != count) {
                return Err(PyValueError::new_err(
                    "one output array (or None) per tensor is needed",
                ));
            }
            let mut targets = out_targets(layout, &chosen, out.as_deref(), &base_arrays, data)?;
            layout
                .check_decoded_bytes(Some(&chosen), copy, this.limit(max_decoded_bytes))
                .map_err(to_py)?;
            // Checksums (and bool values), and the framing of sealed coded tensors, first:
            // a bad payload costs no allocation beyond its stored bytes.
            let bytes = SendSlice(data);
            let mut opened = detached(py, || {
                if verify {
                    layout.verify_before_decode(bytes.0, indices.as_deref())?;
                } else {
                    (chosen.iter()).try_for_each(|&i| layout.check_raw_values(bytes.0, i))?;
                }
                layout.open_sealed(bytes.0, &chosen)
            })?;
            let mut arrays = Vec::with_capacity(count);
            let (mut jobs, mut into_callers) = (Vec::new(), Vec::new());
            for (k, &i) in chosen.iter().enumerate() {
                let e = &layout.entries[i];
                let base =
                    (base_arrays.get(k).and_then(|b| b.as_ref())).map(|(d, shape, bytes)| {
                        TensorView {
                            name: &e.name,
                            dtype: *d,
                            shape,
                            data: bytes,
                        }
                    });
                if let Some(target) = targets.get_mut(k).and_then(Option::take) {
                    into_callers.push((i, target, base, opened[k].take()));
                    arrays.push(out.as_ref().and_then(|o| o[k].clone()).expect("an output"));
                    continue;
                }
                let descr = descr_of(py, e.dtype, &e.name)?;
                if e.is_stored_raw() && !copy {
                    // SAFETY: parse() checked that the stored bytes lie inside `data`, which
                    // `slf`'s memory keeps alive and in place as long as `slf` lives; the
                    // view holds `slf` as its base.
                    let view = unsafe { data.as_ptr().add(e.start) };
                    let (arr, _) = unsafe {
                        new_array(py, &descr, &e.shape, Some((view, slf.clone().into_any())))
                    }?;
                    arrays.push(arr);
                } else {
                    // SAFETY: numpy allocated the array (at least one byte) for exactly
                    // `e.nbytes` bytes; nobody else sees it before this call returns.
                    let (arr, ptr) =
                        unsafe { new_array(py, &descr, &e.shape, None) }.map_err(|err| {
                            no_memory(err, py, &format!("tensor {:?}", e.name), e.nbytes)
                        })?;
                    let target = unsafe { std::slice::from_raw_parts_mut(ptr, e.nbytes) };
                    jobs.push((i, target, base, opened[k].take()));
                    arrays.push(arr);
                }
            }
            // New arrays first: a failure there leaves the caller's arrays untouched.
            let bytes = SendSlice(data);
            detached(py, move || {
                layout.decode_many(bytes.0, jobs, false)?;
                layout.decode_all_or_nothing(bytes.0, into_callers, false)
            })?;
            Ok(arrays)
        })
    }

    /// The update record of the metadata (see `tw.encode_update`), checked: None, or
    /// (difference base hex or None, base hex or None, round, client, samples). A
    /// malformed record is a FormatError saying why.
    fn update_record(&self) -> PyResult<Option<RecordTuple>> {
        let Some(m) = &self.layout.metadata else {
            return Ok(None);
        };
        let rec = UpdateRecord::from_metadata(m).map_err(FormatError::new_err)?;
        Ok(rec.map(|r| {
            (
                r.difference.as_ref().map(hex32),
                r.base.as_ref().map(hex32),
                r.round,
                r.client,
                r.samples,
            )
        }))
    }

    /// The expected base id, checked against `base_id`: an IntegrityError if they differ.
    fn check_base(&self, base_id: Option<&str>) -> PyResult<()> {
        match (&self.layout.base, base_id) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(IntegrityError::new_err(
                "this payload holds deltas: pass base= (the tensors it was encoded against)",
            )),
            (Some(want), Some(got)) => {
                if parse_hex32(got).as_ref() == Some(want) {
                    Ok(())
                } else {
                    Err(IntegrityError::new_err(format!(
                        "base mismatch: the payload was encoded against base {}, the given base is {got}",
                        hex32(want)
                    )))
                }
            }
        }
    }
}

/// A delta's base array: its dtype, shape and bytes.
type BaseArray<'a> = (DType, Vec<u64>, &'a [u8]);

/// The dtype, shape and bytes of a delta's base array.
fn array_view<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<BaseArray<'a>> {
    let (dtype, shape) = array_spec(obj)?;
    Ok((dtype, shape, array_bytes(obj)?))
}

/// The memory of each output array in `out` (aligned with `chosen`), checked to fit its
/// tensor (see `out_memory`) and to share no byte with another output, a base or the
/// payload `data`: a refusal is an InputError naming the tensor.
fn out_targets<'a>(
    layout: &Layout,
    chosen: &[usize],
    out: Option<&'a [Option<Bound<'_, PyAny>>]>,
    bases: &[Option<BaseArray<'_>>],
    data: &[u8],
) -> PyResult<Vec<Option<&'a mut [u8]>>> {
    let Some(out) = out else {
        return Ok(Vec::new());
    };
    let mut targets = Vec::with_capacity(out.len());
    for (&i, obj) in chosen.iter().zip(out) {
        let e = &layout.entries[i];
        targets.push(match obj {
            Some(obj) => Some(out_memory(obj, &e.name, e.dtype, &e.shape)?),
            None => None,
        });
    }
    let span = |b: &[u8]| (b.as_ptr() as usize, b.as_ptr() as usize + b.len());
    let overlap = |x: (usize, usize), y: (usize, usize)| x.0 < y.1 && y.0 < x.1;
    let read: Vec<(usize, usize)> = bases
        .iter()
        .flatten()
        .map(|(_, _, b)| span(b))
        .chain([span(data)])
        .collect();
    let mut written: Vec<((usize, usize), usize)> = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        let Some(t) = t.as_deref() else { continue };
        let here = span(t);
        let name = &layout.entries[chosen[k]].name;
        let shared = if read.iter().any(|&r| overlap(here, r)) {
            Some("a base or the payload")
        } else if written.iter().any(|&(w, _)| overlap(here, w)) {
            Some("another output array")
        } else {
            None
        };
        if let Some(what) = shared {
            return Err(to_py(
                Error::input(format!("its output array shares memory with {what}"))
                    .in_tensor(name.as_str()),
            ));
        }
        written.push((here, k));
    }
    Ok(targets)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Payload>()?;
    Ok(())
}
