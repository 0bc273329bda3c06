//! The Python extension module `tensorwire._core`: the only module that touches pyo3.
//!
//! One submodule per feature; each has a `register` function called below. Every
//! function converts Python inputs to plain slices, releases the GIL for
//! the heavy work in the core, and maps core errors to the exceptions `errors` defines.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::dtype::DType;
use crate::error::Error;

mod aggregate;
mod arrays;
mod buffer;
mod chunk;
mod container;
mod errors;
mod partial;
mod payload;
mod reassembler;
mod trust;

pub(crate) use errors::{to_py, FormatError, InputError, IntegrityError, TensorwireError};

/// Run `f`, turning a panic — a bug in tensorwire, never an expected outcome — into a
/// `TensorwireError` that says so, instead of letting it unwind into Python. The last
/// line of defence: inputs are validated before use, and allocations that depend on
/// them fail with errors.
pub(crate) fn catch<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(TensorwireError::new_err(format!(
            "internal error (a bug in tensorwire, please report it): {what}"
        )))
    })
}

/// Core work with the GIL released, its errors mapped and its panics caught.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> crate::error::Result<T> + Send,
) -> PyResult<T> {
    py.detach(|| catch(|| f().map_err(to_py)))
}

/// A `MemoryError` from allocating `bytes` bytes for `what`, as a `FormatError`: the
/// sizes come from the input, and running out of memory is the input's doing.
pub(crate) fn no_memory(e: PyErr, py: Python<'_>, what: &str, bytes: usize) -> PyErr {
    if e.is_instance_of::<pyo3::exceptions::PyMemoryError>(py) {
        FormatError::new_err(format!("cannot allocate {bytes} bytes for {what}"))
    } else {
        e
    }
}

/// A new, uninitialised `bytes` object of `len` bytes and a pointer to its contents.
/// The caller must write every byte before the object is seen by anyone else. Large
/// objects are backed by transparent huge pages where the kernel allows (one page
/// fault per 2 MiB instead of per 4 KiB).
pub(crate) fn new_bytes(py: Python<'_>, len: usize) -> PyResult<(Py<PyBytes>, *mut u8)> {
    let size = isize::try_from(len)
        .map_err(|_| FormatError::new_err(format!("cannot allocate {len} bytes")))?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `size`
    // bytes; the caller fills it completely before it is returned to Python.
    unsafe {
        let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        let obj = Bound::from_owned_ptr_or_err(py, obj)
            .map_err(|e| no_memory(e, py, "a bytes object", len))?
            .cast_into_unchecked::<PyBytes>();
        let ptr = pyo3::ffi::PyBytes_AsString(obj.as_ptr()) as *mut u8;
        crate::memory::advise_huge_pages(std::slice::from_raw_parts_mut(
            ptr as *mut std::mem::MaybeUninit<u8>,
            len,
        ));
        Ok((obj.unbind(), ptr))
    }
}

pub(crate) fn dtype_of(name: &str, tensor: &str) -> PyResult<DType> {
    DType::parse(name)
        .map_err(|_| to_py(Error::input(format!("unsupported dtype {name:?}")).in_tensor(tensor)))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "FORMAT_VERSION",
        (crate::format::VERSION_MAJOR, crate::format::VERSION_MINOR),
    )?;
    m.add("MAX_HEADER_LEN", crate::format::MAX_HEADER_LEN)?;
    m.add("MAX_TENSORS", crate::format::MAX_TENSORS)?;
    m.add("MAX_RANK", crate::format::MAX_RANK)?;
    m.add("MAX_DEPTH", crate::format::structure::MAX_DEPTH)?;
    m.add("MAX_NAME_LEN", crate::format::MAX_NAME_LEN)?;
    // The dtype table: (name, itemsize, numpy type string, or None for ml_dtypes' types).
    let dtypes: Vec<(&str, usize, Option<&str>)> = crate::dtype::TABLE
        .iter()
        .map(|r| {
            let typestr = match r.numpy {
                crate::dtype::Numpy::Builtin(t) => Some(t),
                crate::dtype::Numpy::MlDtypes => None,
            };
            (r.name, r.itemsize, typestr)
        })
        .collect();
    m.add("DTYPES", pyo3::types::PyTuple::new(m.py(), dtypes)?)?;
    m.add_function(wrap_pyfunction!(arrays::numpy_dtypes, m)?)?;
    m.add_function(wrap_pyfunction!(arrays::not_stored, m)?)?;
    errors::register(m)?;
    container::register(m)?;
    payload::register(m)?;
    aggregate::register(m)?;
    partial::register(m)?;
    chunk::register(m)?;
    reassembler::register(m)?;
    trust::register(m)?;
    Ok(())
}
