//! Bindings of the container: encode, save, tensors_id and the `Payload` reader.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::arrays::{array_bytes, descr_of, new_array, Tensors};
use super::{bytes_of, new_bytes, to_py, InputError, IntegrityError};
use crate::container::{self, EncodeOptions, Layout};
use crate::header::{hex32, parse_hex32};

/// What every encoder takes from the Python layer, its `_EncodeArgs`: tensor names, the
/// tensors, one codec spec or one per tensor, for delta codecs the bases aligned with the
/// tensors (None where a tensor has none), the structure JSON and the base id.
#[derive(FromPyObject)]
pub(super) struct EncodeArgs<'py> {
    names: Bound<'py, PyList>,
    leaves: Bound<'py, PyList>,
    codecs: Bound<'py, PyAny>,
    bases: Option<Bound<'py, PyList>>,
    structure: Option<String>,
    base_id: Option<String>,
}

impl EncodeArgs<'_> {
    /// The tensors, held for as long as the core borrows their bytes.
    pub(super) fn tensors(&self) -> PyResult<Tensors> {
        Tensors::take(&self.names, &self.leaves, &self.codecs, self.bases.as_ref())
    }

    /// The payload-wide options, with the user metadata's JSON.
    pub(super) fn options<'a>(&'a self, metadata: Option<&'a str>) -> EncodeOptions<'a> {
        EncodeOptions {
            structure: self.structure.as_deref(),
            metadata,
            base_id: self.base_id.as_deref(),
        }
    }
}

/// Encode tensors into a new `bytes` object, written in place (no intermediate copy).
#[pyfunction]
#[pyo3(signature = (args, metadata=None))]
fn encode<'py>(
    py: Python<'py>,
    args: EncodeArgs<'py>,
    metadata: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    let held = args.tensors()?;
    let inputs = held.inputs(py);
    let opts = args.options(metadata);
    let prepared = py
        .detach(|| container::prepare(&inputs, &opts))
        .map_err(to_py)?;
    let len = prepared.total_len();
    let (bytes, ptr) = new_bytes(py, len)?;
    // SAFETY: the object is fresh, unshared, and exactly `len` bytes long.
    let out = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    py.detach(|| prepared.write_into(out));
    Ok(bytes.into_bound(py))
}

/// Encode tensors straight into the file at `path` (written to a temporary file
/// beside it, then renamed, so readers never see a partial file).
#[pyfunction]
#[pyo3(signature = (args, path, metadata=None))]
fn save<'py>(
    py: Python<'py>,
    args: EncodeArgs<'py>,
    path: std::path::PathBuf,
    metadata: Option<&str>,
) -> PyResult<()> {
    let held = args.tensors()?;
    let inputs = held.inputs(py);
    let opts = args.options(metadata);
    py.detach(|| crate::file::save_atomic(&inputs, &opts, &path))
        .map_err(to_py)
}

/// The id of a set of tensors (see FORMAT.md, "Base id"): what a delta's header records.
#[pyfunction]
fn tensors_id<'py>(
    py: Python<'py>,
    names: &Bound<'py, PyList>,
    tensors: &Bound<'py, PyList>,
) -> PyResult<String> {
    let held = Tensors::take(names, tensors, &PyString::new(py, "raw"), None)?;
    let parts: Vec<_> = held
        .inputs(py)
        .iter()
        .map(|t| (t.name, t.dtype, t.shape, t.data))
        .collect();
    Ok(hex32(&py.detach(|| container::tensors_id(&parts))))
}

/// A parsed payload over a buffer (bytes, bytearray, memoryview or mmap). Parsing
/// validates the preamble and header; tensor bytes are only read by `verify` and
/// `decode_into`.
#[pyclass(frozen, module = "tensorwire._core")]
struct Payload {
    buf: PyBuffer<u8>,
    layout: Layout,
}

#[pymethods]
impl Payload {
    #[new]
    fn new(py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buf = PyBuffer::<u8>::get(buffer)
            .map_err(|e| InputError::new_err(format!("expected a bytes-like object: {e}")))?;
        let data = bytes_of(&buf)?;
        let layout = py.detach(|| container::parse(data)).map_err(to_py)?;
        Ok(Payload { buf, layout })
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

    /// (major, minor) format version of the writer.
    #[getter]
    fn version(&self) -> (u16, u16) {
        (crate::header::VERSION_MAJOR, self.layout.minor)
    }

    /// Verify the checksums of the tensors at `indices` (all, padding included, if None).
    #[pyo3(signature = (indices=None))]
    fn verify(&self, py: Python<'_>, indices: Option<Vec<usize>>) -> PyResult<()> {
        let data = bytes_of(&self.buf)?;
        let n = self.layout.entries.len();
        if let Some(bad) = indices.iter().flatten().find(|&&i| i >= n) {
            return Err(PyValueError::new_err(format!("no tensor at index {bad}")));
        }
        py.detach(|| self.layout.verify(data, indices.as_deref()))
            .map_err(to_py)
    }

    /// Tensor names, in storage order.
    fn names(&self) -> Vec<&str> {
        self.layout
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The tensors at `indices` (all of them when None) as numpy arrays: raw tensors as
    /// read-only views of the payload (unless `copy`), the others decoded into new
    /// arrays, in parallel with the GIL released, after checking the checksums when
    /// `verify`. `bases`, for delta payloads, is aligned with `indices`.
    #[pyo3(signature = (indices=None, bases=None, verify=true, copy=false))]
    fn arrays<'py>(
        slf: &Bound<'py, Self>,
        indices: Option<Vec<usize>>,
        bases: Option<Vec<Option<Bound<'py, PyAny>>>>,
        verify: bool,
        copy: bool,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let py = slf.py();
        let this = slf.get();
        let layout = &this.layout;
        let data = bytes_of(&this.buf)?;
        let n = layout.entries.len();
        if let Some(bad) = indices.iter().flatten().find(|&&i| i >= n) {
            return Err(PyValueError::new_err(format!("no tensor at index {bad}")));
        }
        let count = indices.as_ref().map_or(n, Vec::len);
        if bases.as_ref().is_some_and(|b| b.len() != count) {
            return Err(PyValueError::new_err(
                "one base (or None) per tensor is needed",
            ));
        }
        let base_bytes = bases
            .iter()
            .flatten()
            .map(|b| b.as_ref().map(array_bytes).transpose())
            .collect::<PyResult<Vec<_>>>()?;
        let mut out = Vec::with_capacity(count);
        let mut jobs = Vec::new();
        for k in 0..count {
            let i = indices.as_ref().map_or(k, |ix| ix[k]);
            let e = &layout.entries[i];
            let descr = descr_of(py, e.dtype, &e.name)?;
            if e.pipeline.is_raw() && !copy {
                // SAFETY: parse() checked that the stored bytes lie inside `data`, which
                // the buffer held by `slf` keeps alive and in place as long as `slf`
                // lives; the view holds `slf` as its base.
                let view = unsafe { data.as_ptr().add(e.start) };
                let (arr, _) = unsafe {
                    new_array(py, &descr, &e.shape, Some((view, slf.clone().into_any())))
                }?;
                out.push(arr);
            } else {
                // SAFETY: numpy allocated the array (at least one byte) for exactly
                // `e.nbytes` bytes; nobody else sees it before this call returns.
                let (arr, ptr) = unsafe { new_array(py, &descr, &e.shape, None) }?;
                let target = unsafe { std::slice::from_raw_parts_mut(ptr, e.nbytes) };
                jobs.push((i, target, base_bytes.get(k).copied().flatten()));
                out.push(arr);
            }
        }
        py.detach(|| {
            if verify {
                layout.verify(data, indices.as_deref())?;
            }
            layout.decode_many(data, jobs, false)
        })
        .map_err(to_py)?;
        Ok(out)
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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    m.add_function(wrap_pyfunction!(tensors_id, m)?)?;
    m.add_class::<Payload>()?;
    Ok(())
}
