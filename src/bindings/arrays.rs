//! numpy arrays across the boundary, through rust-numpy's bindings of numpy's C API.
//!
//! In: a tensor is used as it is when it is a C-contiguous numpy array of a dtype
//! tensorwire stores; the Python layer normalises anything else (torch tensors,
//! big-endian or strided arrays, scalars) first, for the leaves [`not_stored`] lists.
//! The bytes are borrowed in place, never copied.
//!
//! Out: raw tensors become read-only arrays viewing the payload, whose base is the
//! object that holds the payload's buffer; decoded tensors are written into arrays that
//! numpy allocates here. Either costs one array object per tensor and no Python code.

use std::ffi::c_int;
use std::ptr;

use numpy::npyffi::{self, npy_intp, NpyTypes, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString};

use super::InputError;
use crate::dtype::{DType, Numpy, TABLE};
use crate::error::Error;
use crate::format::{TensorInput, TensorView};

/// numpy's dtype for each [`DType`] (by [`DType::index`]); `None` where numpy has none
/// here (bfloat16 and float8 without `ml_dtypes`).
struct Dtypes([Option<Py<PyArrayDescr>>; DType::ALL.len()]);

static DTYPES: PyOnceLock<Dtypes> = PyOnceLock::new();

/// The descriptors, made once from [`crate::dtype::TABLE`]: numpy's own from their type
/// strings, the others from `ml_dtypes` when it is installed.
fn dtypes(py: Python<'_>) -> PyResult<&'static Dtypes> {
    DTYPES.get_or_try_init(py, || {
        let ml_dtypes = match py.import("ml_dtypes") {
            Ok(m) => Some(m),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyImportError>(py) => None,
            Err(e) => return Err(e),
        };
        let mut out: [Option<Py<PyArrayDescr>>; DType::ALL.len()] = Default::default();
        for (slot, row) in out.iter_mut().zip(&TABLE) {
            *slot = match row.numpy {
                Numpy::Builtin(typestr) => Some(PyArrayDescr::new(py, typestr)?.unbind()),
                Numpy::MlDtypes => match &ml_dtypes {
                    Some(m) => Some(PyArrayDescr::new(py, m.getattr(row.name)?)?.unbind()),
                    None => None,
                },
            };
        }
        Ok(Dtypes(out))
    })
}

/// numpy's dtype of every dtype name a payload can carry here (the `ml_dtypes` ones
/// only when it is installed), in table order.
#[pyfunction]
pub(super) fn numpy_dtypes(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let table = dtypes(py)?;
    let out = PyDict::new(py);
    for (row, descr) in TABLE.iter().zip(&table.0) {
        if let Some(d) = descr {
            out.set_item(row.name, d.bind(py))?;
        }
    }
    Ok(out)
}

/// The positions of the `leaves` that are not C-contiguous numpy arrays of a stored
/// dtype: the ones the Python layer normalises before an encode.
#[pyfunction]
pub(super) fn not_stored(leaves: &Bound<'_, PyList>) -> PyResult<Vec<usize>> {
    let mut out = Vec::new();
    for (i, leaf) in leaves.iter().enumerate() {
        if as_stored(&leaf)?.is_none() {
            out.push(i);
        }
    }
    Ok(out)
}

/// The start of an array's memory.
///
/// # Safety
/// `a` must point to a live array object.
unsafe fn data_ptr(a: *mut npyffi::PyArrayObject) -> *const u8 {
    unsafe { (*a).fields.data as *const u8 }
}

/// The numpy dtype of `dtype`, or an error naming the tensor when numpy lacks it.
pub(super) fn descr_of<'py>(
    py: Python<'py>,
    dtype: DType,
    tensor: &str,
) -> PyResult<Bound<'py, PyArrayDescr>> {
    match &dtypes(py)?.0[dtype.index()] {
        Some(d) => Ok(d.bind(py).clone()),
        None => Err(super::to_py(
            Error::input(format!(
                "dtype {dtype}: pip install 'tensorwire[bf16]' (ml_dtypes) to read it"
            ))
            .in_tensor(tensor),
        )),
    }
}

/// The [`DType`] stored for an array of numpy dtype `descr`, if tensorwire stores it
/// as it is (native little-endian byte order).
fn dtype_of(py: Python<'_>, descr: &Bound<'_, PyArrayDescr>) -> PyResult<Option<DType>> {
    let table = dtypes(py)?;
    // numpy reuses its builtin descriptors, so identity almost always decides.
    let known = || {
        table
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((i, d.as_ref()?)))
    };
    if let Some((i, _)) = known().find(|(_, d)| d.as_ptr() == descr.as_ptr()) {
        return Ok(Some(DType::ALL[i]));
    }
    Ok(known()
        .find(|(_, d)| d.bind(py).is_equiv_to(descr))
        .map(|(i, _)| DType::ALL[i]))
}

/// `obj` as an array tensorwire can borrow: C-contiguous, of a stored dtype.
fn as_stored<'py>(
    obj: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyUntypedArray>, DType)>> {
    let Ok(a) = obj.cast::<PyUntypedArray>() else {
        return Ok(None);
    };
    if !a.is_c_contiguous() {
        return Ok(None);
    }
    Ok(dtype_of(obj.py(), &a.dtype())?.map(|d| (a.clone(), d)))
}

/// The first `len` bytes of `a`'s memory.
///
/// # Safety
/// `a` must be C-contiguous and hold at least `len` bytes, and the caller must keep a
/// reference to it for `'a` (numpy refuses to resize an array that others reference, so
/// the memory then stays in place).
unsafe fn memory_of<'a>(a: &Bound<'_, PyUntypedArray>, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(data_ptr(a.as_array_ptr()), len) }
}

/// The bytes of `obj`, a C-contiguous array of a stored dtype (what the Python layer
/// hands over as a delta's base). The slice is valid while `obj` lives.
pub(super) fn array_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    let Some((a, dtype)) = as_stored(obj)? else {
        return Err(InputError::new_err(
            "expected a C-contiguous numpy array of a stored dtype",
        ));
    };
    // SAFETY: checked C-contiguous; `obj` is borrowed for 'a.
    Ok(unsafe { memory_of(&a, nbytes_of(&a, dtype)) })
}

/// The memory of `obj` to decode tensor `name` (of `dtype` and `shape`) into: a
/// writable, C-contiguous numpy array of exactly that dtype (native little-endian byte
/// order) and shape; else an InputError naming the tensor and what is wrong. The slice
/// is valid while `obj` lives.
#[allow(clippy::mut_from_ref)]
pub(super) fn out_memory<'a>(
    obj: &'a Bound<'_, PyAny>,
    name: &str,
    dtype: DType,
    shape: &[u64],
) -> PyResult<&'a mut [u8]> {
    let refuse = |why: String| super::to_py(Error::input(why).in_tensor(name));
    let Ok(a) = obj.cast::<PyUntypedArray>() else {
        return Err(refuse(format!(
            "out= needs a numpy array, not {}",
            obj.get_type().name().map_or("?".into(), |n| n.to_string())
        )));
    };
    let found = dtype_of(obj.py(), &a.dtype())?;
    let dims: Vec<u64> = a.shape().iter().map(|&d| d as u64).collect();
    if found != Some(dtype) || dims != shape {
        return Err(refuse(format!(
            "out= array is {}{dims:?}, the tensor is {dtype}{shape:?}",
            a.dtype()
        )));
    }
    if !a.is_c_contiguous() {
        return Err(refuse("out= array is not C-contiguous".into()));
    }
    // SAFETY: `a` is a live array object.
    let flags = unsafe { (*a.as_array_ptr()).fields.flags };
    if flags & npyffi::flags::NPY_ARRAY_WRITEABLE == 0 {
        return Err(refuse("out= array is read-only".into()));
    }
    let len = nbytes_of(a, dtype);
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: writable, C-contiguous, `len` bytes; `obj` is borrowed for 'a, so the
    // memory stays in place (numpy refuses to resize a referenced array).
    Ok(unsafe { std::slice::from_raw_parts_mut(data_ptr(a.as_array_ptr()) as *mut u8, len) })
}

/// The dtype and shape of `obj`, a C-contiguous array of a stored dtype.
pub(super) fn array_spec(obj: &Bound<'_, PyAny>) -> PyResult<(DType, Vec<u64>)> {
    let Some((a, dtype)) = as_stored(obj)? else {
        return Err(InputError::new_err(
            "expected a C-contiguous numpy array of a stored dtype",
        ));
    };
    Ok((dtype, a.shape().iter().map(|&d| d as u64).collect()))
}

/// One tensor to encode, held so its bytes stay in place.
struct Held {
    name: String,
    array: Py<PyUntypedArray>,
    dtype: DType,
    shape: Vec<u64>,
    nbytes: usize,
    base: Option<(Py<PyUntypedArray>, usize)>,
}

/// The tensors of one encode: names, arrays (normalised where needed) and codec specs,
/// held for as long as the core borrows their bytes.
pub(super) struct Tensors {
    held: Vec<Held>,
    codecs: Codecs,
}

/// One codec spec for every tensor, or one per tensor.
enum Codecs {
    One(String),
    Each(Vec<String>),
}

/// The `len` bytes of a held C-contiguous array.
fn bytes_of_array<'a>(py: Python<'_>, a: &'a Py<PyUntypedArray>, len: usize) -> &'a [u8] {
    // SAFETY: C-contiguous and `len` bytes long (checked when it was taken); the
    // reference held in `a` lives for 'a.
    unsafe { memory_of(a.bind(py), len) }
}

fn nbytes_of(a: &Bound<'_, PyUntypedArray>, dtype: DType) -> usize {
    a.len() * dtype.itemsize()
}

/// Take one leaf, which the Python layer normalised (see [`not_stored`]).
fn take<'py>(
    name: &str,
    leaf: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyUntypedArray>, DType)> {
    as_stored(leaf)?.ok_or_else(|| {
        super::to_py(
            Error::input(format!(
                "cannot be stored as {} (expected a C-contiguous numpy array of a stored dtype)",
                leaf.get_type()
                    .name()
                    .map_or_else(|_| "given".into(), |t| t.to_string())
            ))
            .in_tensor(name),
        )
    })
}

impl Tensors {
    /// Take `names[i]` -> `leaves[i]`, with `codecs` (a str for all, or a list of str)
    /// and optional `bases` (a list aligned with the leaves, None where a tensor has
    /// no base).
    pub(super) fn take(
        names: &Bound<'_, PyList>,
        leaves: &Bound<'_, PyList>,
        codecs: &Bound<'_, PyAny>,
        bases: Option<&Bound<'_, PyList>>,
    ) -> PyResult<Self> {
        let n = names.len();
        if leaves.len() != n || bases.is_some_and(|b| b.len() != n) {
            return Err(InputError::new_err(
                "names, tensors and bases differ in length",
            ));
        }
        let codecs = match codecs.cast::<PyString>() {
            Ok(s) => Codecs::One(s.to_cow()?.into_owned()),
            Err(_) => {
                let each: Vec<String> = codecs.extract()?;
                if each.len() != n {
                    return Err(InputError::new_err("one codec spec per tensor is needed"));
                }
                Codecs::Each(each)
            }
        };
        let mut held = Vec::with_capacity(n);
        for (i, (name, leaf)) in names.iter().zip(leaves.iter()).enumerate() {
            let name = name
                .cast::<PyString>()
                .map_err(|_| {
                    InputError::new_err(format!(
                        "tensor names must be str, got {}",
                        name.get_type()
                            .name()
                            .map_or_else(|_| "?".into(), |t| t.to_string())
                    ))
                })?
                .to_cow()?
                .into_owned();
            let (array, dtype) = take(&name, &leaf)?;
            let shape = array.shape().iter().map(|&d| d as u64).collect();
            let base = match bases.map(|b| b.get_item(i)).transpose()? {
                Some(b) if !b.is_none() => {
                    let (b, d) = take(&name, &b)?;
                    let len = nbytes_of(&b, d);
                    Some((b.unbind(), len))
                }
                _ => None,
            };
            held.push(Held {
                name,
                nbytes: nbytes_of(&array, dtype),
                array: array.unbind(),
                dtype,
                shape,
                base,
            });
        }
        Ok(Tensors { held, codecs })
    }

    /// The tensors as the core takes them, borrowing from `self`.
    pub(super) fn inputs(&self, py: Python<'_>) -> Vec<TensorInput<'_>> {
        self.held
            .iter()
            .enumerate()
            .map(|(i, h)| TensorInput {
                tensor: TensorView {
                    name: &h.name,
                    dtype: h.dtype,
                    shape: &h.shape,
                    data: bytes_of_array(py, &h.array, h.nbytes),
                },
                codec: match &self.codecs {
                    Codecs::One(c) => c,
                    Codecs::Each(v) => &v[i],
                },
                base: h.base.as_ref().map(|(b, len)| bytes_of_array(py, b, *len)),
            })
            .collect()
    }
}

/// A new C-ordered array of `descr` and `shape`. With `view = Some((data, owner))` it
/// is a read-only view of `data`, which `owner` keeps alive; with `None` numpy
/// allocates it (writable, uninitialised) and the pointer to its memory is returned.
///
/// # Safety
/// For a view, `data` must point to `shape`'s size times the itemsize of valid bytes
/// that live, unchanged in place, as long as `owner` does.
pub(super) unsafe fn new_array<'py>(
    py: Python<'py>,
    descr: &Bound<'py, PyArrayDescr>,
    shape: &[u64],
    view: Option<(*const u8, Bound<'py, PyAny>)>,
) -> PyResult<(Bound<'py, PyAny>, *mut u8)> {
    // Header validation bounded every dimension by isize::MAX and the rank by MAX_RANK.
    let mut dims: Vec<npy_intp> = shape.iter().map(|&d| d as npy_intp).collect();
    let data = view.as_ref().map_or(ptr::null_mut(), |(p, _)| *p as *mut _);
    // SAFETY: the type object and the descriptor come from numpy; NewFromDescr steals
    // the descriptor reference handed over; flags 0 means C order and, for a view,
    // read-only.
    let arr = unsafe {
        let subtype = npyffi::get_type_object(py, NpyTypes::PyArray_Type);
        let obj = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            subtype,
            descr.clone().into_dtype_ptr(),
            dims.len() as c_int,
            dims.as_mut_ptr(),
            ptr::null_mut(),
            data,
            0,
            ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, obj)?
    };
    let array_ptr = arr.as_ptr() as *mut npyffi::PyArrayObject;
    if let Some((_, owner)) = view {
        // SAFETY: a fresh array without a base; SetBaseObject steals the reference.
        if unsafe { PY_ARRAY_API.PyArray_SetBaseObject(py, array_ptr, owner.into_ptr()) } < 0 {
            return Err(PyErr::fetch(py));
        }
    }
    // SAFETY: a live array object.
    let data = unsafe { data_ptr(array_ptr) } as *mut u8;
    Ok((arr, data))
}
