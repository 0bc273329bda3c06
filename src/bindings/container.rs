//! Bindings of the container: encode, save, tensors_id and the `Payload` reader.

use super::buffer::Buffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::borrow::Cow;

use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::arrays::{array_bytes, array_spec, descr_of, new_array, Tensors};
use super::{
    catch, detached, new_bytes, no_memory, to_py, FormatError, InputError, IntegrityError,
};
use crate::dtype::DType;
use crate::fedavg::UpdateRecord;
use crate::format::structure::Builder;
use crate::format::{self, default_max_decoded_bytes, EncodeOptions, Layout, TensorView};
use crate::format::{hex32, parse_hex32};

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
    #[pyo3(signature = (indices=None, bases=None, verify=true, copy=false, max_decoded_bytes=None))]
    fn arrays<'py>(
        slf: &Bound<'py, Self>,
        indices: Option<Vec<usize>>,
        bases: Option<Vec<Option<Bound<'py, PyAny>>>>,
        verify: bool,
        copy: bool,
        max_decoded_bytes: Option<u64>,
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
            let mut out = Vec::with_capacity(count);
            let mut jobs = Vec::new();
            for (k, &i) in chosen.iter().enumerate() {
                let e = &layout.entries[i];
                let descr = descr_of(py, e.dtype, &e.name)?;
                if e.is_stored_raw() && !copy {
                    // SAFETY: parse() checked that the stored bytes lie inside `data`, which
                    // `slf`'s memory keeps alive and in place as long as `slf` lives; the
                    // view holds `slf` as its base.
                    let view = unsafe { data.as_ptr().add(e.start) };
                    let (arr, _) = unsafe {
                        new_array(py, &descr, &e.shape, Some((view, slf.clone().into_any())))
                    }?;
                    out.push(arr);
                } else {
                    // SAFETY: numpy allocated the array (at least one byte) for exactly
                    // `e.nbytes` bytes; nobody else sees it before this call returns.
                    let (arr, ptr) =
                        unsafe { new_array(py, &descr, &e.shape, None) }.map_err(|err| {
                            no_memory(err, py, &format!("tensor {:?}", e.name), e.nbytes)
                        })?;
                    let target = unsafe { std::slice::from_raw_parts_mut(ptr, e.nbytes) };
                    let base =
                        base_arrays
                            .get(k)
                            .and_then(|b| b.as_ref())
                            .map(|(d, shape, bytes)| TensorView {
                                name: &e.name,
                                dtype: *d,
                                shape,
                                data: bytes,
                            });
                    jobs.push((i, target, base, opened[k].take()));
                    out.push(arr);
                }
            }
            let bytes = SendSlice(data);
            detached(py, move || layout.decode_many(bytes.0, jobs, false))?;
            Ok(out)
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

/// The dtype, shape and bytes of a delta's base array.
fn array_view<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<(DType, Vec<u64>, &'a [u8])> {
    let (dtype, shape) = array_spec(obj)?;
    Ok((dtype, shape, array_bytes(obj)?))
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
    m.add_function(wrap_pyfunction!(save, m)?)?;
    m.add_function(wrap_pyfunction!(preamble_content_id, m)?)?;
    m.add_function(wrap_pyfunction!(tensors_id, m)?)?;
    m.add_function(wrap_pyfunction!(unflatten, m)?)?;
    m.add_function(wrap_pyfunction!(write_file, m)?)?;
    m.add_class::<Payload>()?;
    Ok(())
}
