//! The exception classes of `tensorwire`, created here in `tensorwire._core` (and
//! re-exported by `tensorwire._errors`), and the one mapping of a core [`Error`] to
//! them: its kind picks the class, its places become the attributes `tensor`, `update`,
//! `chunk` and `limit` (None when the error does not name one); a buffer too small for a
//! payload adds `needed` and `available`.

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::type_object::PyTypeInfo;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::PyErrArguments;

use crate::error::{Error, Kind};

/// The module the classes live in, as Python shows it.
const MODULE: &str = "tensorwire._core";

/// The attributes every tensorwire exception carries (class-level defaults: None).
const PLACES: [&str; 4] = ["tensor", "update", "chunk", "limit"];

/// A new exception class `name` deriving from `bases`, with `doc`; the base class gets
/// the attributes' defaults.
fn new_class(
    py: Python<'_>,
    name: &str,
    doc: &str,
    bases: &[Bound<'_, PyType>],
    defaults: bool,
) -> PyResult<Py<PyType>> {
    let dict = PyDict::new(py);
    dict.set_item("__doc__", doc)?;
    dict.set_item("__module__", MODULE)?;
    if defaults {
        for place in PLACES {
            dict.set_item(place, py.None())?;
        }
    }
    let bases = PyTuple::new(py, bases)?;
    Ok(PyType::type_object(py)
        .call1((name, bases, dict))?
        .cast_into::<PyType>()?
        .unbind())
}

/// One exception class: a Rust type whose type object is the class, created on first use.
macro_rules! exception {
    ($name:ident, $doc:literal, [$($base:ty),+], $defaults:expr) => {
        #[doc = $doc]
        #[repr(transparent)]
        pub(crate) struct $name(PyAny);

        // SAFETY: the type object is created once and kept alive by the static for the
        // life of the process; it is an exception class, and `PyAny` is the layout of
        // its instances as seen from Rust.
        unsafe impl PyTypeInfo for $name {
            fn type_object_raw(py: Python<'_>) -> *mut pyo3::ffi::PyTypeObject {
                static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
                CLASS
                    .get_or_init(py, || {
                        new_class(
                            py,
                            stringify!($name),
                            $doc,
                            &[$(<$base as PyTypeInfo>::type_object(py)),+],
                            $defaults,
                        )
                        .expect(concat!("cannot create ", stringify!($name)))
                    })
                    .as_ptr()
                    .cast()
            }
        }

        impl $name {
            /// A new error of this class with the message `msg` and no places.
            #[allow(dead_code)]
            pub(crate) fn new_err(msg: impl Into<String>) -> PyErr {
                PyErr::new::<$name, _>(msg.into())
            }
        }
    };
}

exception!(
    TensorwireError,
    "Base class of every error tensorwire raises.\n\nWhere the error concerns one, \
     ``tensor`` is the tensor's name, ``update`` the number of the update in an \
     aggregation, ``chunk`` a ``(payload_id, index, count)`` tuple and ``limit`` a \
     ``(name, value, allowed)`` tuple of the documented limit that was broken; None \
     otherwise.",
    [PyException],
    true
);
exception!(
    FormatError,
    "The payload is malformed, of an unsupported version, or breaks a documented limit.",
    [TensorwireError, PyValueError],
    false
);
exception!(
    IntegrityError,
    "Bytes do not match their checksum, the payload is truncated, or a delta's base\n    \
     is missing or different from the one it was encoded against.",
    [TensorwireError, PyValueError],
    false
);
exception!(
    AuthenticationError,
    "Who made the payload cannot be established: it is not authenticated, it was\n    \
     authenticated with another key or signed by a key that is not trusted, or it was\n    \
     altered after it was made (every plain checksum may have been recomputed).",
    [IntegrityError],
    false
);
exception!(
    CodecError,
    "A codec spec is invalid, or a codec stage does not fit a tensor.",
    [TensorwireError, PyValueError],
    false
);
exception!(
    InputError,
    "The input cannot be encoded: unsupported type or dtype, bad name, bad metadata.",
    [TensorwireError, PyTypeError],
    false
);
exception!(
    ClosedError,
    "A method of a closed :class:`~tensorwire.Reader` was called (like a closed file).",
    [TensorwireError, PyValueError],
    false
);

/// What a core error becomes: its message and places, turned into the exception
/// instance when Python needs it (so errors can be made with the GIL released).
struct Raised {
    kind: Kind,
    message: String,
    tensor: Option<String>,
    update: Option<usize>,
    chunk: Option<(String, u32, u32)>,
    limit: Option<(&'static str, u64, u64)>,
    /// A buffer too small: the bytes needed and those available.
    sizes: Option<(u64, u64)>,
}

impl Raised {
    fn of(e: &Error) -> Raised {
        Raised {
            kind: e.kind(),
            message: e.to_string(),
            tensor: e.tensor().map(str::to_owned),
            update: e.update(),
            chunk: e.chunk().map(|c| (c.payload_hex(), c.index, c.count)),
            limit: e.broken_limit().map(|(l, v, m)| (l.name(), v, m)),
            sizes: e.buffer_sizes(),
        }
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        match self.kind {
            Kind::Format => FormatError::type_object(py),
            Kind::Integrity => IntegrityError::type_object(py),
            Kind::Authentication => AuthenticationError::type_object(py),
            Kind::Codec => CodecError::type_object(py),
            Kind::Input => InputError::type_object(py),
            Kind::Io => TensorwireError::type_object(py),
        }
    }

    fn instance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let exc = self.class(py).call1((self.message.as_str(),))?;
        exc.setattr("tensor", self.tensor.as_deref())?;
        exc.setattr("update", self.update)?;
        exc.setattr("chunk", self.chunk.clone())?;
        exc.setattr("limit", self.limit)?;
        if let Some((needed, available)) = self.sizes {
            exc.setattr("needed", needed)?;
            exc.setattr("available", available)?;
        }
        Ok(exc)
    }
}

impl PyErrArguments for Raised {
    /// The exception instance itself (Python raises an instance given as the value
    /// as it is); if it cannot be made, the bare message.
    fn arguments(self, py: Python<'_>) -> Py<PyAny> {
        match self.instance(py) {
            Ok(exc) => exc.unbind(),
            Err(_) => pyo3::types::PyString::new(py, &self.message)
                .into_any()
                .unbind(),
        }
    }
}

/// The Python exception for a core error: the class of its kind, with its places.
pub(crate) fn to_py(e: Error) -> PyErr {
    let raised = Raised::of(&e);
    match raised.kind {
        Kind::Format => PyErr::new::<FormatError, _>(raised),
        Kind::Integrity => PyErr::new::<IntegrityError, _>(raised),
        Kind::Authentication => PyErr::new::<AuthenticationError, _>(raised),
        Kind::Codec => PyErr::new::<CodecError, _>(raised),
        Kind::Input => PyErr::new::<InputError, _>(raised),
        Kind::Io => PyErr::new::<TensorwireError, _>(raised),
    }
}

/// `err`, a tensorwire exception raised before the core saw update `index` (its buffer
/// could not be read), marked as concerning that update.
pub(crate) fn in_update(py: Python<'_>, err: PyErr, index: usize) -> PyErr {
    let value = err.value(py);
    if err.is_instance_of::<TensorwireError>(py)
        && value.getattr("update").is_ok_and(|u| u.is_none())
    {
        // Setting an attribute of a fresh exception instance cannot fail in practice;
        // if it did, the error would still be raised, only without its update.
        let _ = value.setattr("update", index);
    }
    err
}

/// Add the classes to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TensorwireError", TensorwireError::type_object(py))?;
    m.add("FormatError", FormatError::type_object(py))?;
    m.add("IntegrityError", IntegrityError::type_object(py))?;
    m.add("AuthenticationError", AuthenticationError::type_object(py))?;
    m.add("CodecError", CodecError::type_object(py))?;
    m.add("InputError", InputError::type_object(py))?;
    m.add("ClosedError", ClosedError::type_object(py))?;
    Ok(())
}
