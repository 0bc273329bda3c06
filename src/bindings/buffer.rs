//! `Buffer`: the bytes of any object with the buffer protocol, pinned while held.
//!
//! The extension is built against the stable ABI from Python 3.9 (`abi3-py39`), where the
//! buffer protocol is not part of the limited API (it joined in 3.11), so pyo3's
//! `PyBuffer` is unavailable. numpy's C API takes its place: `PyArray_FromBuffer` (what
//! `numpy.frombuffer` calls) exports the object's buffer through a `memoryview` it keeps,
//! and hands back a one-dimensional `uint8` array over the same memory, with no copy.
//! The array pins the export (a `bytearray` cannot be resized while it lives) and says
//! whether the memory may be written.

use std::os::raw::c_int;

use numpy::npyffi::{flags::NPY_ARRAY_WRITEABLE, PyArrayObject, NPY_TYPES, PY_ARRAY_API};
use pyo3::prelude::*;

use super::InputError;

/// A C-contiguous byte view of a Python object's memory.
pub(crate) struct Buffer {
    // The uint8 array over the memory; holding it keeps the export alive.
    _array: Py<PyAny>,
    ptr: *mut u8,
    len: usize,
    readonly: bool,
}

// SAFETY: the pointer is into memory pinned by the export `_array` holds; the GIL-free
// code that reads or writes through it is handed each buffer once (see `bytes_mut`).
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// The memory of `obj`, or an `InputError` saying what was expected.
    pub(crate) fn get(obj: &Bound<'_, PyAny>) -> PyResult<Buffer> {
        let py = obj.py();
        // SAFETY: numpy's C API, loaded once by rust-numpy. `PyArray_DescrFromType` returns
        // a new reference that `PyArray_FromBuffer` steals; the result is a new reference
        // to a one-dimensional uint8 array, or NULL with an exception set.
        let array = unsafe {
            let descr = PY_ARRAY_API.PyArray_DescrFromType(py, NPY_TYPES::NPY_UBYTE as c_int);
            let array = PY_ARRAY_API.PyArray_FromBuffer(py, obj.as_ptr(), descr, -1, 0);
            Bound::from_owned_ptr_or_err(py, array)
        }
        .map_err(|e| InputError::new_err(format!("expected a bytes-like object: {e}")))?;
        // SAFETY: `array` is the array just made: one dimension, uint8, contiguous.
        let (ptr, len, readonly) = unsafe {
            let raw = array.as_ptr() as *mut PyArrayObject;
            let len = usize::try_from(*(*raw).fields.dimensions).unwrap_or(0);
            let readonly = (*raw).fields.flags & NPY_ARRAY_WRITEABLE == 0;
            ((*raw).fields.data as *mut u8, len, readonly)
        };
        Ok(Buffer {
            _array: array.unbind(),
            ptr,
            len,
            readonly,
        })
    }

    /// Whether nobody may write the memory through this view (bytes, read-only maps and
    /// memoryviews, arrays marked read-only).
    pub(crate) fn readonly(&self) -> bool {
        self.readonly
    }

    /// The bytes. The slice is valid while `self` lives.
    pub(crate) fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` bytes at `ptr`, pinned by the export.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, to be written.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn bytes_mut(&self) -> PyResult<&mut [u8]> {
        if self.readonly {
            return Err(InputError::new_err("output buffer is read-only"));
        }
        if self.len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: writable, `len` bytes, pinned; callers hand each buffer once.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) })
    }
}

impl FromPyObject<'_, '_> for Buffer {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Buffer> {
        Buffer::get(&obj)
    }
}
