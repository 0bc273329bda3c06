//! Bindings of federated averaging: the batch `aggregate` function and the streaming
//! `Accumulator` class. The Python layer (`tensorwire._aggregate`) decides the round's
//! template and reads update metadata; everything that touches tensor bytes runs here
//! with the GIL released.

use std::sync::Mutex;

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

use super::{bytes_of, bytes_of_mut, dtype_of, to_py, InputError};
use crate::aggregate::{
    about_update, aggregate as average, Accumulator as CoreAccumulator, Contribution, Kind,
    Options, Precision, Round, Source, TensorSpec, TensorView,
};
use crate::container::{self, Layout};
use crate::error::Error;
use crate::header::parse_hex32;

/// (name, dtype name, shape): one tensor of the round.
type SpecArg = (String, String, Vec<u64>);
/// (name, dtype name, shape, uint8 view of the bytes): one in-memory tensor.
type ViewArg = (String, String, Vec<u64>, PyBuffer<u8>);
/// One update: (payload bytes or None, tensors or None, base id if a difference, weight).
type UpdateArg = (
    Option<PyBuffer<u8>>,
    Option<Vec<ViewArg>>,
    Option<String>,
    f64,
);

fn round_of(template: Vec<SpecArg>, base_id: Option<&str>) -> PyResult<Round> {
    let specs = template
        .into_iter()
        .map(|(name, dtype, shape)| {
            Ok(TensorSpec {
                dtype: dtype_of(&dtype, &name)?,
                name,
                shape,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    Round::new(specs, base_id.map(id_of).transpose()?).map_err(to_py)
}

fn id_of(hex: &str) -> PyResult<[u8; 32]> {
    parse_hex32(hex)
        .ok_or_else(|| InputError::new_err(format!("not a base id (64 hex digits): {hex:?}")))
}

fn options(clip_norm: Option<f64>, precision: &str, verify: bool) -> PyResult<Options> {
    let precision = match precision {
        "auto" => Precision::Auto,
        "float64" => Precision::Float64,
        other => {
            return Err(InputError::new_err(format!(
                "accumulate must be \"auto\" or \"float64\", got {other:?}"
            )))
        }
    };
    Ok(Options {
        clip_norm,
        precision,
        verify,
    })
}

fn slices(bufs: &[PyBuffer<u8>]) -> PyResult<Vec<&[u8]>> {
    bufs.iter().map(bytes_of).collect()
}

fn slices_mut(bufs: &[PyBuffer<u8>]) -> PyResult<Vec<&mut [u8]>> {
    let mut seen = std::collections::HashSet::with_capacity(bufs.len());
    bufs.iter()
        .map(|b| {
            let s = bytes_of_mut(b)?;
            if !s.is_empty() && !seen.insert(s.as_ptr() as usize) {
                return Err(InputError::new_err("the same output buffer is given twice"));
            }
            Ok(s)
        })
        .collect()
}

/// The borrowed form of one update, before its payload (if any) is parsed.
struct Borrowed<'a> {
    payload: Option<&'a [u8]>,
    views: Vec<TensorView<'a>>,
    kind: Kind,
    weight: f64,
}

fn borrow(updates: &[UpdateArg]) -> PyResult<Vec<Borrowed<'_>>> {
    updates
        .iter()
        .enumerate()
        .map(|(u, (payload, tensors, diff_base, weight))| {
            let views = match tensors {
                Some(ts) => ts
                    .iter()
                    .map(|(name, dtype, shape, data)| {
                        Ok(TensorView {
                            name,
                            dtype: dtype_of(dtype, name)?,
                            shape,
                            data: bytes_of(data)?,
                        })
                    })
                    .collect::<PyResult<Vec<_>>>()?,
                None => Vec::new(),
            };
            let payload = payload.as_ref().map(bytes_of).transpose()?;
            if payload.is_some() == tensors.is_some() {
                return Err(InputError::new_err(format!(
                    "update {u}: give a payload or tensors, not both or neither"
                )));
            }
            let kind = match diff_base {
                Some(id) => Kind::Difference(id_of(id)?),
                None => Kind::Model,
            };
            Ok(Borrowed {
                payload,
                views,
                kind,
                weight: *weight,
            })
        })
        .collect()
}

/// Parse every payload (in parallel): a malformed one is an error naming the update.
fn parse_all(updates: &[Borrowed<'_>]) -> crate::error::Result<Vec<Option<Layout>>> {
    use rayon::prelude::*;
    updates
        .par_iter()
        .enumerate()
        .map(|(u, b)| match b.payload {
            Some(buf) => container::parse(buf)
                .map(Some)
                .map_err(|e| about_update(u, e)),
            None => Ok(None),
        })
        .collect()
}

fn source_of<'a>(b: &'a Borrowed<'a>, layout: &'a Option<Layout>) -> Source<'a> {
    match (b.payload, layout) {
        (Some(buf), Some(layout)) => Source::Payload { buf, layout },
        _ => Source::Tensors(&b.views),
    }
}

/// What the batch call found: rejected updates (index, reason), and for the accepted
/// ones (in order) their indices, norms (when clipping) and scale factors.
type Outcome = (Vec<(usize, String)>, Vec<usize>, Vec<f64>, Vec<f64>);

/// Weighted average of `updates` into `out`, tensor by tensor in parallel with the GIL
/// released. With `skip` false nothing is computed when an update does not fit: the
/// rejections come back and the caller raises.
#[pyfunction]
#[pyo3(signature = (template, base_id, base, updates, out, clip_norm, accumulate, verify, skip))]
#[allow(clippy::too_many_arguments)]
fn aggregate(
    py: Python<'_>,
    template: Vec<SpecArg>,
    base_id: Option<String>,
    base: Option<Vec<PyBuffer<u8>>>,
    updates: Vec<UpdateArg>,
    out: Vec<PyBuffer<u8>>,
    clip_norm: Option<f64>,
    accumulate: &str,
    verify: bool,
    skip: bool,
) -> PyResult<Outcome> {
    let round = round_of(template, base_id.as_deref())?;
    let opts = options(clip_norm, accumulate, verify)?;
    let base = base.as_deref().map(slices).transpose()?;
    let out = slices_mut(&out)?;
    let borrowed = borrow(&updates)?;
    py.detach(|| {
        let layouts = parse_all(&borrowed)?;
        let mut rejected = Vec::new();
        let mut accepted = Vec::new();
        let mut contributions = Vec::new();
        let mut first_kind = None;
        for (u, (b, layout)) in borrowed.iter().zip(&layouts).enumerate() {
            let source = source_of(b, layout);
            match round.check(&source, b.kind, first_kind) {
                Ok(index) => {
                    first_kind.get_or_insert(b.kind);
                    accepted.push(u);
                    contributions.push(Contribution {
                        source,
                        kind: b.kind,
                        weight: b.weight,
                        index,
                    });
                }
                Err(reason) => rejected.push((u, reason)),
            }
        }
        if !rejected.is_empty() && !skip {
            return Ok((rejected, accepted, Vec::new(), Vec::new()));
        }
        let report = average(&round, base.as_deref(), &contributions, out, &opts)
            .map_err(|e| renumber(e, &accepted))?;
        Ok((rejected, accepted, report.norms, report.scales))
    })
    .map_err(to_py)
}

/// The core numbers accepted updates 0..n; name them by their position in the call.
fn renumber(e: Error, accepted: &[usize]) -> Error {
    let fix = |m: String| {
        if let Some(rest) = m.strip_prefix("update ") {
            if let Some((n, tail)) = rest.split_once(':') {
                if let Some(&u) = n.parse::<usize>().ok().and_then(|k| accepted.get(k)) {
                    return format!("update {u}:{tail}");
                }
            }
        }
        m
    };
    e.map_message(fix)
}

/// Running sums of a round's updates, added one at a time (see `tensorwire.Aggregator`).
#[pyclass(frozen, module = "tensorwire._core")]
struct Accumulator {
    inner: Mutex<CoreAccumulator>,
}

impl Accumulator {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, CoreAccumulator>> {
        self.inner
            .lock()
            .map_err(|_| InputError::new_err("the aggregator is unusable after a panic"))
    }
}

#[pymethods]
impl Accumulator {
    #[new]
    #[pyo3(signature = (template, base_id, clip_norm, accumulate, verify))]
    fn new(
        template: Vec<SpecArg>,
        base_id: Option<String>,
        clip_norm: Option<f64>,
        accumulate: &str,
        verify: bool,
    ) -> PyResult<Self> {
        let round = round_of(template, base_id.as_deref())?;
        let opts = options(clip_norm, accumulate, verify)?;
        let inner = CoreAccumulator::new(round, opts).map_err(to_py)?;
        Ok(Accumulator {
            inner: Mutex::new(inner),
        })
    }

    /// Add one update. Returns (None, norm, scale) when added, (reason, nan, 0.0) when
    /// it does not fit the round (nothing is added then). Bad payloads raise.
    fn add(
        &self,
        py: Python<'_>,
        update: UpdateArg,
        base: Option<Vec<PyBuffer<u8>>>,
    ) -> PyResult<(Option<String>, f64, f64)> {
        let base = base.as_deref().map(slices).transpose()?;
        let updates = [update];
        let borrowed = borrow(&updates)?;
        py.detach(|| {
            let layouts = parse_all(&borrowed)?;
            let source = source_of(&borrowed[0], &layouts[0]);
            let mut acc = self
                .inner
                .lock()
                .map_err(|_| Error::input("the aggregator is unusable after a panic"))?;
            match acc.check(&source, borrowed[0].kind) {
                Err(reason) => Ok((Some(reason), f64::NAN, 0.0)),
                Ok(index) => {
                    let c = Contribution {
                        source,
                        kind: borrowed[0].kind,
                        weight: borrowed[0].weight,
                        index,
                    };
                    let (norm, scale) = acc.add(&c, base.as_deref())?;
                    Ok((None, norm, scale))
                }
            }
        })
        .map_err(to_py)
    }

    /// Write the weighted average of what was added into `out` (one buffer per tensor).
    fn finish_into(
        &self,
        py: Python<'_>,
        base: Option<Vec<PyBuffer<u8>>>,
        out: Vec<PyBuffer<u8>>,
    ) -> PyResult<()> {
        let base = base.as_deref().map(slices).transpose()?;
        let out = slices_mut(&out)?;
        py.detach(|| {
            self.lock()?
                .finish_into(base.as_deref(), out)
                .map_err(to_py)
        })
    }

    /// Number of updates added.
    #[getter]
    fn count(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| Ok(self.lock()?.count()))
    }

    /// Sum of the weights added.
    #[getter]
    fn total_weight(&self, py: Python<'_>) -> PyResult<f64> {
        py.detach(|| Ok(self.lock()?.total_weight()))
    }
}

/// Whether the codec `spec` is a delta (decoding needs the base it was encoded against).
#[pyfunction]
fn codec_needs_base(spec: &str) -> PyResult<bool> {
    Ok(crate::codec::Pipeline::parse(spec)
        .map_err(to_py)?
        .needs_base())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(aggregate, m)?)?;
    m.add_function(wrap_pyfunction!(codec_needs_base, m)?)?;
    m.add_class::<Accumulator>()?;
    Ok(())
}
