//! Bindings of aggregation: the batch `aggregate` function and the streaming
//! `Accumulator` class. The Python layer (`tensorwire._aggregate`) decides the round's
//! template from parsed `Payload`s (each payload is parsed once) and reports refusals;
//! everything that touches tensor bytes runs here with the GIL released.

use std::sync::{Arc, Mutex, MutexGuard};

use super::buffer::Buffer;
use pyo3::prelude::*;

use super::payload::Payload;
use super::{catch, detached, dtype_of, to_py, InputError};
use crate::error::Error;
use crate::fedavg::{
    aggregate as combine, stream::Verdict, Accumulator as CoreAccumulator, Contribution, Kind,
    Method, Options, Precision, Round, Source, TensorSpec,
};
use crate::format::parse_hex32;
use crate::format::TensorView;

/// (name, dtype name, shape): one tensor of the round.
type SpecArg = (String, String, Vec<u64>);
/// (name, dtype name, shape, uint8 view of the bytes): one in-memory tensor.
type ViewArg = (String, String, Vec<u64>, Buffer);
/// One update: (parsed payload or None, tensors or None, base id if a difference,
/// weight, its number).
type UpdateArg<'py> = (
    Option<Bound<'py, Payload>>,
    Option<Vec<ViewArg>>,
    Option<String>,
    f64,
    usize,
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

#[allow(clippy::too_many_arguments)]
fn options(
    clip_norm: Option<f64>,
    max_norm: Option<f64>,
    precision: &str,
    method: &str,
    verify: bool,
) -> PyResult<Options> {
    let precision = match precision {
        "auto" => Precision::Auto,
        "float64" => Precision::Float64,
        other => {
            return Err(InputError::new_err(format!(
                "accumulate must be \"auto\" or \"float64\", got {other:?}"
            )))
        }
    };
    let opts = Options {
        clip_norm,
        max_norm,
        precision,
        verify,
        method: Method::parse(method).map_err(to_py)?,
        scratch_out: false,
    };
    opts.check().map_err(to_py)?;
    Ok(opts)
}

fn slices(bufs: &[Buffer]) -> Vec<&[u8]> {
    bufs.iter().map(Buffer::bytes).collect()
}

fn slices_mut(bufs: &[Buffer]) -> PyResult<Vec<&mut [u8]>> {
    let mut seen = std::collections::HashSet::with_capacity(bufs.len());
    bufs.iter()
        .map(|b| {
            let s = b.bytes_mut()?;
            if !s.is_empty() && !seen.insert(s.as_ptr() as usize) {
                return Err(InputError::new_err("the same output buffer is given twice"));
            }
            Ok(s)
        })
        .collect()
}

/// The borrowed form of one update.
struct Borrowed<'a> {
    payload: Option<&'a Payload>,
    views: Vec<TensorView<'a>>,
    kind: Kind,
    weight: f64,
    id: usize,
}

impl<'a> Borrowed<'a> {
    fn source(&'a self) -> Source<'a> {
        match self.payload {
            Some(p) => Source::Payload {
                buf: p.memory.bytes(),
                layout: &p.layout,
            },
            None => Source::Tensors(&self.views),
        }
    }
}

fn borrow<'a>(updates: &'a [UpdateArg<'_>]) -> PyResult<Vec<Borrowed<'a>>> {
    updates
        .iter()
        .map(|(payload, tensors, diff_base, weight, id)| {
            let views = match tensors {
                Some(ts) => ts
                    .iter()
                    .map(|(name, dtype, shape, data)| {
                        Ok(TensorView {
                            name,
                            dtype: dtype_of(dtype, name)?,
                            shape,
                            data: data.bytes(),
                        })
                    })
                    .collect::<PyResult<Vec<_>>>()?,
                None => Vec::new(),
            };
            if payload.is_some() == tensors.is_some() {
                return Err(InputError::new_err(format!(
                    "update {id}: give a payload or tensors, not both or neither"
                )));
            }
            let kind = match diff_base {
                Some(b) => Kind::Difference(id_of(b)?),
                None => Kind::Model,
            };
            Ok(Borrowed {
                payload: payload.as_ref().map(|p| p.get()),
                views,
                kind,
                weight: *weight,
                id: *id,
            })
        })
        .collect()
}

/// What the batch call found: refused updates (number, reason), per update given its
/// norm and scale factor, and whether the result was computed.
type Outcome = (Vec<(usize, String)>, Vec<f64>, Vec<f64>, bool);

/// Combine `updates` into `out`, tensor by tensor in parallel with the GIL released.
/// Updates that do not fit the round or are refused come back with their reasons; with
/// `skip` false nothing is computed when there are any.
#[pyfunction]
#[pyo3(signature = (template, base_id, base, updates, out, clip_norm, max_norm, accumulate, method, verify, skip, scratch_out))]
#[allow(clippy::too_many_arguments)]
fn aggregate(
    py: Python<'_>,
    template: Vec<SpecArg>,
    base_id: Option<String>,
    base: Option<Vec<Buffer>>,
    updates: Vec<UpdateArg<'_>>,
    out: Vec<Buffer>,
    clip_norm: Option<f64>,
    max_norm: Option<f64>,
    accumulate: &str,
    method: &str,
    verify: bool,
    skip: bool,
    scratch_out: bool,
) -> PyResult<Outcome> {
    catch(|| {
        let round = round_of(template, base_id.as_deref())?;
        let opts = Options {
            scratch_out,
            ..options(clip_norm, max_norm, accumulate, method, verify)?
        };
        let base = base.as_deref().map(slices);
        let out = slices_mut(&out)?;
        let borrowed = borrow(&updates)?;
        let n = borrowed.len();
        detached(py, || {
            let mut refused = Vec::new();
            let mut contributions = Vec::new();
            let mut first_kind = None;
            let mut position = Vec::new();
            for (k, b) in borrowed.iter().enumerate() {
                let source = b.source();
                match round.check(&source, b.kind, first_kind) {
                    Ok(index) => {
                        first_kind.get_or_insert(b.kind);
                        position.push(k);
                        contributions.push(Contribution {
                            id: b.id,
                            source,
                            kind: b.kind,
                            weight: b.weight,
                            index,
                        });
                    }
                    Err(reason) => refused.push((b.id, reason)),
                }
            }
            let (mut norms, mut scales) = (vec![f64::NAN; n], vec![0.0; n]);
            if !refused.is_empty() && !skip {
                return Ok((refused, norms, scales, false));
            }
            let outcome = combine(&round, base.as_deref(), &contributions, out, &opts, skip)?;
            for (j, &k) in position.iter().enumerate() {
                norms[k] = outcome.norms[j];
                scales[k] = outcome.scales[j];
            }
            refused.extend(outcome.refused);
            refused.sort_by_key(|r| r.0);
            Ok((refused, norms, scales, outcome.computed))
        })
    })
}

/// Running sums of a round's updates, added one at a time (see `tensorwire.Aggregator`).
///
/// The sums sit behind an `Arc` so that a partial aggregate streamed out in chunks
/// (`partial_chunks`) can read them without copying them or holding the lock; while such
/// a stream is alive, adding and merging are refused (nothing may change what it reads).
#[pyclass(frozen, module = "tensorwire._core")]
pub(super) struct Accumulator {
    inner: Mutex<Arc<CoreAccumulator>>,
}

impl Accumulator {
    pub(super) fn lock(&self) -> crate::error::Result<MutexGuard<'_, Arc<CoreAccumulator>>> {
        self.inner
            .lock()
            .map_err(|_| Error::input("the aggregator is unusable after a panic"))
    }

    /// The accumulator, to change it: refused while a streamed partial reads its sums.
    pub(super) fn changing<'g>(
        guard: &'g mut MutexGuard<'_, Arc<CoreAccumulator>>,
    ) -> crate::error::Result<&'g mut CoreAccumulator> {
        Arc::get_mut(guard).ok_or_else(|| {
            Error::input(
                "a partial aggregate is being streamed out of this aggregator \
                 (partial_chunks); nothing can be added or merged until its last chunk is \
                 made or it is dropped",
            )
        })
    }
}

#[pymethods]
impl Accumulator {
    #[new]
    #[pyo3(signature = (template, base_id, clip_norm, max_norm, accumulate, verify))]
    fn new(
        template: Vec<SpecArg>,
        base_id: Option<String>,
        clip_norm: Option<f64>,
        max_norm: Option<f64>,
        accumulate: &str,
        verify: bool,
    ) -> PyResult<Self> {
        catch(|| {
            let round = round_of(template, base_id.as_deref())?;
            let opts = options(clip_norm, max_norm, accumulate, "mean", verify)?;
            let inner = CoreAccumulator::new(round, opts).map_err(to_py)?;
            Ok(Accumulator {
                inner: Mutex::new(Arc::new(inner)),
            })
        })
    }

    /// Add one update. Returns (None, norm, scale) when added, (reason, nan, 0.0) when
    /// it does not fit the round or is refused (nothing changes then). Bad payloads raise
    /// (and change nothing either).
    fn add(
        &self,
        py: Python<'_>,
        update: UpdateArg<'_>,
        base: Option<Vec<Buffer>>,
    ) -> PyResult<(Option<String>, f64, f64)> {
        catch(|| {
            let base = base.as_deref().map(slices);
            let updates = [update];
            let borrowed = borrow(&updates)?;
            let b = &borrowed[0];
            detached(py, || {
                let source = b.source();
                let mut guard = self.lock()?;
                let acc = Accumulator::changing(&mut guard)?;
                let index = match acc.check(&source, b.kind) {
                    Err(reason) => return Ok((Some(reason), f64::NAN, 0.0)),
                    Ok(index) => index,
                };
                let c = Contribution {
                    id: b.id,
                    source,
                    kind: b.kind,
                    weight: b.weight,
                    index,
                };
                Ok(match acc.add(&c, base.as_deref())? {
                    Verdict::Added { norm, scale } => (None, norm, scale),
                    Verdict::Refused(reason) => (Some(reason), f64::NAN, 0.0),
                })
            })
        })
    }

    /// Write the weighted average of what was added into `out` (one buffer per tensor).
    fn finish_into(
        &self,
        py: Python<'_>,
        base: Option<Vec<Buffer>>,
        out: Vec<Buffer>,
    ) -> PyResult<()> {
        catch(|| {
            let base = base.as_deref().map(slices);
            let out = slices_mut(&out)?;
            detached(py, || self.lock()?.finish_into(base.as_deref(), out))
        })
    }

    /// The partial aggregate of what was added and merged, as a payload (see
    /// `tensorwire.Aggregator.partial`): the sums stored with `codec` (lossless), the
    /// round number, the signers and nonces of the updates counted, the round's
    /// structure; authenticated with `key` and signed with `signing_key` if given.
    #[pyo3(signature = (round, signers, nonces, structure, codec, key, signing_key))]
    #[allow(clippy::too_many_arguments)]
    fn partial<'py>(
        &self,
        py: Python<'py>,
        round: Option<i64>,
        signers: Vec<Vec<u8>>,
        nonces: Vec<Vec<u8>>,
        structure: Option<String>,
        codec: &str,
        key: Option<&[u8]>,
        signing_key: Option<&[u8]>,
    ) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        catch(|| {
            super::partial::write(
                py,
                self,
                round,
                signers,
                nonces,
                structure,
                codec,
                key,
                signing_key,
            )
        })
    }

    /// The partial aggregate `partial` makes, as chunks of at most `max_bytes` bytes made
    /// one at a time from the sums (see `tensorwire.Aggregator.partial_chunks`); adding
    /// and merging are refused until the last chunk is made or the chunks are dropped.
    #[pyo3(signature = (round, signers, nonces, structure, codec, max_bytes, payload_id, key, signing_key))]
    #[allow(clippy::too_many_arguments)]
    fn partial_chunks(
        &self,
        py: Python<'_>,
        round: Option<i64>,
        signers: Vec<Vec<u8>>,
        nonces: Vec<Vec<u8>>,
        structure: Option<String>,
        codec: &str,
        max_bytes: i128,
        payload_id: Option<&[u8]>,
        key: Option<&[u8]>,
        signing_key: Option<&[u8]>,
    ) -> PyResult<super::chunk::EncodedChunks> {
        catch(|| {
            let max_bytes = super::chunk::size_arg("max_bytes", max_bytes)?;
            super::partial::chunks(
                py,
                self,
                round,
                signers,
                nonces,
                structure,
                codec,
                max_bytes,
                payload_id,
                key,
                signing_key,
            )
        })
    }

    /// Merge a partial aggregate (from `read_partial`): None when merged, else why it is
    /// refused (nothing changes then). A corrupt payload raises, changing nothing.
    fn merge(
        &self,
        py: Python<'_>,
        partial: &Bound<'_, super::partial::Partial>,
    ) -> PyResult<Option<String>> {
        catch(|| super::partial::merge(py, self, partial.get()))
    }

    /// Number of updates added.
    #[getter]
    fn count(&self, py: Python<'_>) -> PyResult<usize> {
        detached(py, || Ok(self.lock()?.count()))
    }

    /// Sum of the weights added.
    #[getter]
    fn total_weight(&self, py: Python<'_>) -> PyResult<f64> {
        detached(py, || Ok(self.lock()?.total_weight()))
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
