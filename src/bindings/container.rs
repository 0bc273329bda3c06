//! Bindings of the container's writers: encode, encode_into, encoded_size, save,
//! tensors_id, and the structure around decoded leaves (`unflatten`).

use super::buffer::Buffer;
use pyo3::prelude::*;
use std::borrow::Cow;

use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::arrays::Tensors;
use super::{catch, detached, new_bytes, to_py, InputError};
use crate::error::Error;
use crate::format::hex32;
use crate::format::structure::Builder;
use crate::format::{self, EncodeOptions, TensorInput};

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
            auth: None,
            encrypt: Default::default(),
        }
    }
}

/// Encode tensors into a new `bytes` object, written in place (no intermediate copy);
/// authenticated with `key` and/or signed with `signing_key` (32 bytes each) if given.
#[pyfunction]
#[pyo3(signature = (args, metadata=None, key=None, signing_key=None, encrypt=None))]
fn encode<'py>(
    py: Python<'py>,
    args: EncodeArgs<'py>,
    metadata: Option<&str>,
    key: Option<&[u8]>,
    signing_key: Option<&[u8]>,
    encrypt: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    catch(|| {
        let signing = super::trust::signing(key, signing_key)?;
        let held = args.tensors()?;
        let inputs = held.inputs(py);
        let opts = EncodeOptions {
            auth: Some(&signing),
            encrypt: super::trust::encrypt_arg(encrypt)?,
            ..args.options(metadata)
        };
        let prepared = detached(py, || format::prepare(&inputs, &opts))?;
        let len = prepared.total_len();
        let (bytes, ptr) = new_bytes(py, len)?;
        // SAFETY: the object is fresh, unshared, and exactly `len` bytes long.
        let out = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        detached(py, || prepared.write_into(out))?;
        Ok(bytes.into_bound(py))
    })
}

/// Encode tensors into the start of `buffer` (any writable, C-contiguous bytes-like
/// object: bytearray, numpy array, mmap, memoryview); returns the bytes written. A
/// payload that does not fit is an InputError with `needed` and `available` (the
/// buffer's length); nothing is written past the payload's end, ever.
#[pyfunction]
#[pyo3(signature = (buffer, args, metadata=None, key=None, signing_key=None, encrypt=None))]
fn encode_into<'py>(
    py: Python<'py>,
    buffer: &Bound<'py, PyAny>,
    args: EncodeArgs<'py>,
    metadata: Option<&str>,
    key: Option<&[u8]>,
    signing_key: Option<&[u8]>,
    encrypt: Option<&str>,
) -> PyResult<usize> {
    catch(|| {
        let signing = super::trust::signing(key, signing_key)?;
        let held = args.tensors()?;
        let inputs = held.inputs(py);
        let opts = EncodeOptions {
            auth: Some(&signing),
            encrypt: super::trust::encrypt_arg(encrypt)?,
            ..args.options(metadata)
        };
        let buf = Buffer::get(buffer)?;
        let out = buf.bytes_mut()?;
        refuse_shared(&inputs, out)?;
        detached(py, || format::encode_into(&inputs, &opts, out))
    })
}

/// Refuse an output buffer that shares memory with a tensor or a base being encoded.
fn refuse_shared(inputs: &[TensorInput<'_>], out: &[u8]) -> PyResult<()> {
    let span = |b: &[u8]| (b.as_ptr() as usize, b.as_ptr() as usize + b.len());
    let o = span(out);
    for t in inputs {
        let read = [Some(t.tensor.data), t.base];
        if read.iter().flatten().any(|b| {
            let r = span(b);
            r.0 < o.1 && o.0 < r.1
        }) {
            return Err(to_py(
                Error::input("the output buffer shares memory with this tensor or its base")
                    .in_tensor(t.tensor.name),
            ));
        }
    }
    Ok(())
}

/// The size of the payload `encode` would make of the tensors: (bytes, exact). Exact
/// when every tensor is stored raw (metadata, structure, keys, signatures and
/// encryption included); otherwise the most the codecs can store, run on nothing.
#[pyfunction]
#[pyo3(signature = (args, metadata=None, key=None, signing_key=None, encrypt=None))]
fn encoded_size<'py>(
    py: Python<'py>,
    args: EncodeArgs<'py>,
    metadata: Option<&str>,
    key: Option<&[u8]>,
    signing_key: Option<&[u8]>,
    encrypt: Option<&str>,
) -> PyResult<(usize, bool)> {
    catch(|| {
        let signing = super::trust::signing(key, signing_key)?;
        let held = args.tensors()?;
        let inputs = held.inputs(py);
        let opts = EncodeOptions {
            auth: Some(&signing),
            encrypt: super::trust::encrypt_arg(encrypt)?,
            ..args.options(metadata)
        };
        let size = detached(py, || format::encoded_size(&inputs, &opts))?;
        Ok((size.bytes, size.exact))
    })
}

/// Encode tensors straight into the file at `path` (written to a temporary file
/// beside it, then renamed, so readers never see a partial file); `key` and
/// `signing_key` as for `encode`.
#[pyfunction]
#[pyo3(signature = (args, path, metadata=None, key=None, signing_key=None, encrypt=None))]
fn save<'py>(
    py: Python<'py>,
    args: EncodeArgs<'py>,
    path: std::path::PathBuf,
    metadata: Option<&str>,
    key: Option<&[u8]>,
    signing_key: Option<&[u8]>,
    encrypt: Option<&str>,
) -> PyResult<()> {
    catch(|| {
        let signing = super::trust::signing(key, signing_key)?;
        let held = args.tensors()?;
        let inputs = held.inputs(py);
        let opts = EncodeOptions {
            auth: Some(&signing),
            encrypt: super::trust::encrypt_arg(encrypt)?,
            ..args.options(metadata)
        };
        detached(py, || crate::format::save_atomic(&inputs, &opts, &path))
    })
}

/// Write the bytes of `data` (any C-contiguous bytes-like object) to the file at `path`
/// atomically, as `save` writes payloads: readers see the old file or the new one.
#[pyfunction]
fn write_file(py: Python<'_>, path: std::path::PathBuf, data: &Bound<'_, PyAny>) -> PyResult<()> {
    catch(|| {
        let buf = Buffer::get(data)?;
        let bytes = buf.bytes();
        detached(py, || crate::format::write_atomic(&path, bytes))
    })
}

/// The id of a set of tensors (see FORMAT.md, "Base id"): what a delta's header records.
#[pyfunction]
fn tensors_id<'py>(
    py: Python<'py>,
    names: &Bound<'py, PyList>,
    tensors: &Bound<'py, PyList>,
) -> PyResult<String> {
    catch(|| {
        let held = Tensors::take(names, tensors, &PyString::new(py, "raw"), None)?;
        let parts: Vec<_> = held.inputs(py).iter().map(|t| t.tensor).collect();
        Ok(hex32(&detached(py, || Ok(format::tensors_id(&parts)))?))
    })
}

/// The content id a payload's preamble claims (lowercase hex), or None when `data` does
/// not start with a tensorwire preamble. Nothing else is checked: use it on payloads
/// already verified (a `Reassembler`'s output), as an identity, not as a proof.
#[pyfunction]
fn preamble_content_id(data: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    catch(|| {
        let buf = Buffer::get(data)?;
        let parsed = format::Preamble::parse(buf.bytes());
        Ok(parsed.ok().map(|p| hex32(&p.header_hash)))
    })
}

/// The nested structure `structure` (JSON, or None for a flat mapping by `names`) around
/// `leaves`, built straight from the JSON (no intermediate document).
#[pyfunction]
fn unflatten<'py>(
    py: Python<'py>,
    structure: Option<&str>,
    names: Vec<String>,
    leaves: Vec<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if names.len() != leaves.len() {
        return Err(InputError::new_err("one name per leaf is needed"));
    }
    let Some(json) = structure else {
        let d = PyDict::new(py);
        for (n, leaf) in names.iter().zip(leaves) {
            d.set_item(n, leaf)?;
        }
        return Ok(d.into_any());
    };
    struct Py<'py> {
        py: Python<'py>,
        leaves: Vec<Option<Bound<'py, PyAny>>>,
    }
    impl<'py> Builder for Py<'py> {
        type Node = Bound<'py, PyAny>;
        fn leaf(&mut self, i: usize) -> Result<Self::Node, String> {
            self.leaves[i]
                .take()
                .ok_or_else(|| "a leaf is used twice".into())
        }
        fn seq(&mut self, items: Vec<Self::Node>, tuple: bool) -> Result<Self::Node, String> {
            let built = if tuple {
                PyTuple::new(self.py, items).map(|t| t.into_any())
            } else {
                PyList::new(self.py, items).map(|l| l.into_any())
            };
            built.map_err(|e| e.to_string())
        }
        fn dict(&mut self, items: Vec<(Cow<'_, str>, Self::Node)>) -> Result<Self::Node, String> {
            let d = PyDict::new(self.py);
            for (k, v) in items {
                d.set_item(k.as_ref(), v).map_err(|e| e.to_string())?;
            }
            Ok(d.into_any())
        }
    }
    let count = leaves.len();
    let mut b = Py {
        py,
        leaves: leaves.into_iter().map(Some).collect(),
    };
    catch(|| crate::format::structure::walk(json, count, &mut b).map_err(to_py))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(encode_into, m)?)?;
    m.add_function(wrap_pyfunction!(encoded_size, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    m.add_function(wrap_pyfunction!(preamble_content_id, m)?)?;
    m.add_function(wrap_pyfunction!(tensors_id, m)?)?;
    m.add_function(wrap_pyfunction!(unflatten, m)?)?;
    m.add_function(wrap_pyfunction!(write_file, m)?)?;
    Ok(())
}
