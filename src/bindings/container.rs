//! Bindings of the container: encode, save, tensors_id and the `Payload` reader.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::{bytes_of, bytes_of_mut, dtype_of, to_py, InputError, IntegrityError};
use crate::container::{self, EncodeOptions, Layout, TensorInput};
use crate::header::{hex32, parse_hex32};

/// One tensor as the Python layer hands it over:
/// (name, dtype name, shape, uint8 view of its C-contiguous bytes, codec spec, base bytes).
type TensorArg = (
    String,
    String,
    Vec<u64>,
    PyBuffer<u8>,
    String,
    Option<PyBuffer<u8>>,
);

/// Borrow the inputs as core `TensorInput`s.
fn inputs_of(tensors: &[TensorArg]) -> PyResult<Vec<TensorInput<'_>>> {
    tensors
        .iter()
        .map(|(name, dtype, shape, data, codec, base)| {
            Ok(TensorInput {
                name,
                dtype: dtype_of(dtype, name)?,
                shape,
                data: bytes_of(data)?,
                codec,
                base: base.as_ref().map(bytes_of).transpose()?,
            })
        })
        .collect()
}

/// Encode tensors into a new `bytes` object, written in place (no intermediate copy).
#[pyfunction]
#[pyo3(signature = (tensors, structure=None, metadata=None, base_id=None))]
fn encode<'py>(
    py: Python<'py>,
    tensors: Vec<TensorArg>,
    structure: Option<String>,
    metadata: Option<String>,
    base_id: Option<String>,
) -> PyResult<Bound<'py, PyBytes>> {
    let inputs = inputs_of(&tensors)?;
    let opts = EncodeOptions {
        structure: structure.as_deref(),
        metadata: metadata.as_deref(),
        base_id: base_id.as_deref(),
    };
    let prepared = py
        .detach(|| container::prepare(&inputs, &opts))
        .map_err(to_py)?;
    let len = prepared.total_len();
    let size = isize::try_from(len).map_err(|_| InputError::new_err("payload too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `size`
    // bytes, which we fill completely before anyone else can see it.
    let bytes = unsafe {
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: the object is fresh, unshared, and exactly `len` bytes long.
    let out = unsafe {
        std::slice::from_raw_parts_mut(pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) as *mut u8, len)
    };
    py.detach(|| {
        container::advise_huge_pages(out);
        prepared.write_into(out)
    });
    Ok(bytes)
}

/// Encode tensors straight into the file at `path` (written to a temporary file
/// beside it, then renamed, so readers never see a partial file).
#[pyfunction]
#[pyo3(signature = (tensors, path, structure=None, metadata=None, base_id=None))]
fn save(
    py: Python<'_>,
    tensors: Vec<TensorArg>,
    path: std::path::PathBuf,
    structure: Option<String>,
    metadata: Option<String>,
    base_id: Option<String>,
) -> PyResult<()> {
    let inputs = inputs_of(&tensors)?;
    let opts = EncodeOptions {
        structure: structure.as_deref(),
        metadata: metadata.as_deref(),
        base_id: base_id.as_deref(),
    };
    py.detach(|| crate::file::save_atomic(&inputs, &opts, &path))
        .map_err(to_py)
}

/// The id of a set of tensors (see FORMAT.md, "Base id"): what a delta's header records.
#[pyfunction]
fn tensors_id(
    py: Python<'_>,
    tensors: Vec<(String, String, Vec<u64>, PyBuffer<u8>)>,
) -> PyResult<String> {
    let mut parts = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, data) in &tensors {
        parts.push((
            name.as_str(),
            dtype_of(dtype, name)?,
            shape.as_slice(),
            bytes_of(data)?,
        ));
    }
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

    /// Decode tensors into caller-allocated writable buffers, in parallel with the GIL
    /// released. `jobs` holds (index, output buffer, base bytes or None).
    fn decode_into(
        &self,
        py: Python<'_>,
        jobs: Vec<(usize, PyBuffer<u8>, Option<PyBuffer<u8>>)>,
        verify: bool,
    ) -> PyResult<()> {
        let data = bytes_of(&self.buf)?;
        let n = self.layout.entries.len();
        let mut work = Vec::with_capacity(jobs.len());
        let mut seen = std::collections::HashSet::with_capacity(jobs.len());
        for (i, out, base) in &jobs {
            if *i >= n {
                return Err(PyValueError::new_err(format!("no tensor at index {i}")));
            }
            let out = bytes_of_mut(out)?;
            if !seen.insert(out.as_ptr() as usize) && !out.is_empty() {
                return Err(PyValueError::new_err(
                    "the same output buffer is given twice",
                ));
            }
            work.push((*i, out, base.as_ref().map(bytes_of).transpose()?));
        }
        py.detach(|| self.layout.decode_many(data, work, verify))
            .map_err(to_py)
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
