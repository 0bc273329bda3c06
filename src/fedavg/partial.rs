//! Partial aggregates (docs/FORMAT.md, "Partial aggregates"): an [`Accumulator`]'s
//! running sums written as a payload that another accumulator merges
//! ([`Accumulator::merge`], `merge.rs`), and that payload read back ([`Partial::read`]):
//! checked field by field, because it comes from another server.
//!
//! The payload holds the round's tensors' sums (float32 or float64, as the accumulator
//! keeps them; names and shapes of the round, in its order), then three `uint8`
//! tensors: the content ids of the updates counted (`[k, 32]`), the signers of the
//! signed ones (`[s, 32]`) and the nonces of the authenticated ones (`[m, 16]`), and
//! in its metadata the record under [`PARTIAL_KEY`]: version, round, base, count,
//! total weight, precision, clipping and norm limits, the kind of the updates, the
//! round's dtypes, the sums' bounds and the round's structure.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;

use super::kernels::{store, Acc};
use super::mean::Sums;
use super::record::Records;
use super::{sum_limit, uses_f64, Accumulator, Kind, Options, Precision, Round, TensorSpec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::{hex32, parse_hex32, EncodeOptions, Layout, Prepared, TensorInput, TensorView};
use crate::trust::{Signing, NONCE_LEN};

/// The metadata key of a partial aggregate's record.
pub const PARTIAL_KEY: &str = "tensorwire.partial";
/// The record's version this build writes and reads.
pub const PARTIAL_VERSION: u64 = 1;
/// The tensor of the content ids of the updates counted, `uint8[k, 32]`.
pub const IDS_NAME: &str = "tensorwire.partial/content_ids";
/// The tensor of the signers of the signed updates counted, `uint8[s, 32]`.
pub const SIGNERS_NAME: &str = "tensorwire.partial/signers";
/// The tensor of the nonces of the authenticated updates counted, `uint8[m, 16]`.
pub const NONCES_NAME: &str = "tensorwire.partial/nonces";
/// Longest record accepted: this many bytes of JSON, plus [`RECORD_BYTES_PER_TENSOR`]
/// per tensor of the payload (a dtype name and a bound each, and the structure).
pub const MAX_RECORD_BASE: usize = 64 << 10;
/// See [`MAX_RECORD_BASE`].
pub const RECORD_BYTES_PER_TENSOR: usize = 256;
/// The largest update count a partial may claim: 2^53 (a float64 holds it exactly).
pub const MAX_COUNT: u64 = 1 << 53;

/// A signer's public key.
pub type SignerId = [u8; 32];
/// An authenticated payload's nonce.
pub type Nonce = [u8; NONCE_LEN];

/// What a partial aggregate holds besides the sums, from the server that writes it
/// (the admission of updates, by signer and nonce, is the Python layer's).
#[derive(Debug, Default, Clone)]
pub struct Extras<'a> {
    /// The round number, when the round has one.
    pub round: Option<i64>,
    /// The signer of each signed update counted.
    pub signers: &'a [SignerId],
    /// The nonce of each authenticated update counted.
    pub nonces: &'a [Nonce],
    /// The round's structure JSON (FORMAT.md "Structure"), when not a flat mapping.
    pub structure: Option<&'a str>,
}

/// A partial aggregate whose record and ids were checked: everything but the values of
/// its sums, which [`Accumulator::merge`] checks as it reads them.
#[derive(Debug, Clone)]
pub struct Partial {
    /// The round the sums are for: the round's names, dtypes, shapes and base id.
    pub round: Round,
    /// The round number, if the writer's round has one.
    pub number: Option<i64>,
    /// Updates counted.
    pub count: u64,
    /// Sum of their weights.
    pub total_weight: f64,
    /// The writer's precision (it fixes the sums' dtypes).
    pub precision: Precision,
    /// The writer's clipping norm.
    pub clip_norm: Option<f64>,
    /// The writer's norm limit.
    pub max_norm: Option<f64>,
    /// What the updates held (None when there are none).
    pub kind: Option<Kind>,
    /// Per round tensor: the largest magnitude its sums can have (see `survey::decide`).
    pub bounds: Vec<f64>,
    /// The round's structure JSON, checked against its tensors.
    pub structure: Option<String>,
    /// The content ids of the payloads counted, distinct.
    pub content_ids: Vec<[u8; 32]>,
    /// The signers of the signed updates counted.
    pub signers: Vec<SignerId>,
    /// The nonces of the authenticated updates counted, distinct.
    pub nonces: Vec<Nonce>,
}

/// The record as JSON holds it.
#[derive(Deserialize)]
struct Record {
    version: u64,
    round: Option<i64>,
    base: Option<String>,
    count: u64,
    total_weight: f64,
    accumulate: String,
    clip_norm: Option<f64>,
    max_norm: Option<f64>,
    kind: Option<String>,
    difference_base: Option<String>,
    dtypes: Vec<String>,
    bounds: Vec<f64>,
    structure: Option<String>,
}

/// The name of a precision in the record (and of `accumulate=` in Python).
fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Auto => "auto",
        Precision::Float64 => "float64",
    }
}

/// The dtype of the sums of a tensor of `dtype` at precision `p`.
pub(super) fn sum_dtype(dtype: DType, p: Precision) -> DType {
    if uses_f64(dtype, p) {
        DType::F64
    } else {
        DType::F32
    }
}

/// The sums' little-endian bytes: borrowed on a little-endian machine.
fn le_bytes(sums: &Sums) -> Cow<'_, [u8]> {
    fn of<A: Acc>(v: &[A]) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            // SAFETY: any initialised memory may be viewed as bytes; the length is exact.
            Cow::Borrowed(unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v))
            })
        } else {
            let mut out = vec![0u8; std::mem::size_of_val(v)];
            store(A::DTYPE, v, &mut out);
            Cow::Owned(out)
        }
    }
    match sums {
        Sums::F32(v) => of(v),
        Sums::F64(v) => of(v),
    }
}

/// What [`Accumulator::partial`] lays out: the bytes the payload borrows.
pub struct PartialWriter<'a> {
    acc: &'a Accumulator,
    sums: Vec<Cow<'a, [u8]>>,
    ids: Vec<u8>,
    signers: Vec<u8>,
    nonces: Vec<u8>,
    shapes: [[u64; 2]; 3],
    metadata: String,
}

impl Accumulator {
    /// The accumulator's partial aggregate, ready to be laid out as a payload
    /// ([`PartialWriter::prepare`]). Content ids, signers and nonces are sorted, so that
    /// the same sums and updates make the same payload.
    pub fn partial<'a>(&'a self, extras: &Extras<'_>) -> Result<PartialWriter<'a>> {
        if self.broken {
            return Err(Error::input(
                "this aggregator's sums were damaged by a payload that changed while it was \
                 added; it has no partial aggregate",
            ));
        }
        if let Some(s) = extras.structure {
            crate::format::structure::validate(s, self.round.tensors.len())?;
        }
        for spec in &self.round.tensors {
            if spec.name.starts_with("tensorwire.partial/") {
                return Err(Error::input(
                    "names starting with \"tensorwire.partial/\" are reserved for the ids a \
                     partial aggregate holds",
                )
                .in_tensor(&spec.name));
            }
        }
        let mut ids: Vec<[u8; 32]> = self.seen.iter().copied().collect();
        ids.sort_unstable();
        let mut signers = extras.signers.to_vec();
        signers.sort_unstable();
        let mut nonces = extras.nonces.to_vec();
        nonces.sort_unstable();
        let (kind, difference_base) = match self.first_kind {
            None => (None, None),
            Some(Kind::Model) => (Some("model"), None),
            Some(Kind::Difference(b)) => (Some("difference"), Some(hex32(&b))),
        };
        let record = serde_json::json!({
            "version": PARTIAL_VERSION,
            "round": extras.round,
            "base": self.round.base_id.as_ref().map(hex32),
            "count": self.count as u64,
            "total_weight": self.total_weight,
            "accumulate": precision_name(self.opts.precision),
            "clip_norm": self.opts.clip_norm,
            "max_norm": self.opts.max_norm,
            "kind": kind,
            "difference_base": difference_base,
            "dtypes": self.round.tensors.iter().map(|t| t.dtype.name()).collect::<Vec<_>>(),
            "bounds": self.bounds,
            "structure": extras.structure,
        });
        let metadata = serde_json::json!({ PARTIAL_KEY: record }).to_string();
        Ok(PartialWriter {
            acc: self,
            sums: self.sums.iter().map(le_bytes).collect(),
            shapes: [
                [ids.len() as u64, 32],
                [signers.len() as u64, 32],
                [nonces.len() as u64, NONCE_LEN as u64],
            ],
            ids: ids.concat(),
            signers: signers.concat(),
            nonces: nonces.concat(),
            metadata,
        })
    }
}

impl PartialWriter<'_> {
    /// Lay the partial aggregate out: its sums stored with `codec` (lossless, without a
    /// base: the sums must come back bit for bit), its ids raw, authenticated and
    /// signed as `auth` says.
    pub fn prepare<'p>(&'p self, codec: &'p str, auth: Option<&Signing>) -> Result<Prepared<'p>> {
        let pipeline = crate::codec::Pipeline::parse(codec)?;
        if !pipeline.is_lossless() || pipeline.needs_base() {
            return Err(Error::input(format!(
                "a partial aggregate's sums are stored losslessly and without a base (\"raw\", \
                 \"zstd\", \"shuffle+zstd\", ...), not {codec:?}"
            )));
        }
        let round = &self.acc.round;
        let mut inputs: Vec<TensorInput<'p>> = round
            .tensors
            .iter()
            .zip(&self.sums)
            .map(|(spec, data)| TensorInput {
                tensor: TensorView {
                    name: &spec.name,
                    dtype: sum_dtype(spec.dtype, self.acc.opts.precision),
                    shape: &spec.shape,
                    data,
                },
                codec,
                base: None,
            })
            .collect();
        let ids = [
            (IDS_NAME, &self.ids),
            (SIGNERS_NAME, &self.signers),
            (NONCES_NAME, &self.nonces),
        ];
        for ((name, data), shape) in ids.into_iter().zip(&self.shapes) {
            inputs.push(TensorInput {
                tensor: TensorView {
                    name,
                    dtype: DType::U8,
                    shape,
                    data,
                },
                codec: "raw",
                base: None,
            });
        }
        let opts = EncodeOptions {
            metadata: Some(&self.metadata),
            auth,
            ..Default::default()
        };
        crate::format::prepare(&inputs, &opts)
    }
}

/// `Err(reason)` unless `v` is a finite number in `0..=max`.
fn check_number(what: &str, v: f64, max: f64) -> std::result::Result<(), String> {
    if v.is_finite() && (0.0..=max).contains(&v) {
        Ok(())
    } else {
        Err(format!("its {what} {v:e} is not a number in [0, {max:e}]"))
    }
}

/// A base id of the record.
fn id_of(field: &str, hex: &str) -> std::result::Result<[u8; 32], String> {
    parse_hex32(hex).ok_or_else(|| format!("its {field:?} is not 64 lowercase hex digits: {hex:?}"))
}

/// The rows of the id tensor `j` of the payload: named `name`, `uint8[k, width]`,
/// stored raw (so that `k` is justified by the bytes received), its checksum verified.
fn rows<const W: usize>(
    buf: &[u8],
    layout: &Layout,
    j: usize,
    name: &str,
) -> Result<std::result::Result<Vec<[u8; W]>, String>> {
    let e = &layout.entries[j];
    if e.name != name || e.dtype != DType::U8 || e.shape.len() != 2 || e.shape[1] != W as u64 {
        return Ok(Err(format!(
            "its tensor {j} is {:?} {}{:?}, not {name:?} uint8[k, {W}]",
            e.name, e.dtype, e.shape
        )));
    }
    if !e.is_stored_raw() {
        return Ok(Err(format!("its tensor {name:?} is not stored raw")));
    }
    layout.verify(buf, Some(&[j]))?;
    let stored = layout.stored(buf, j);
    Ok(Ok(stored
        .chunks_exact(W)
        .map(|c| c.try_into().expect("chunk of W bytes"))
        .collect()))
}

impl Partial {
    /// The partial aggregate in the payload `buf` (parsed into `layout`), checked: its
    /// record (every field), its tensors' names, dtypes and shapes, its ids (their
    /// checksums verified). `Ok(Err(reason))` when it is not a well-formed partial
    /// aggregate; `Err` when the payload is corrupt (an id tensor's checksum).
    pub fn read(buf: &[u8], layout: &Layout) -> Result<std::result::Result<Partial, String>> {
        let Some(metadata) = &layout.metadata else {
            return Ok(Err(
                "it is not a partial aggregate (it has no metadata)".into()
            ));
        };
        let records = match Records::of(metadata) {
            Ok(r) => r,
            Err(why) => return Ok(Err(why)),
        };
        let raw = match (records.partial, records.update) {
            (Some(_), Some(_)) => {
                return Ok(Err(
                    "it holds both an update record and a partial record".into()
                ))
            }
            (None, Some(_)) => {
                return Ok(Err(
                    "it is a client update, not a partial aggregate: add it with \
                     Aggregator.add()"
                        .into(),
                ))
            }
            (None, None) => {
                return Ok(Err(format!(
                    "it is not a partial aggregate (its metadata has no {PARTIAL_KEY:?} record)"
                )))
            }
            (Some(raw), None) => raw.get(),
        };
        let n = layout.entries.len();
        let max_len = MAX_RECORD_BASE.saturating_add(n.saturating_mul(RECORD_BYTES_PER_TENSOR));
        if raw.len() > max_len {
            return Ok(Err(format!(
                "its partial record is {} bytes of JSON, more than {max_len} for {n} tensors",
                raw.len()
            )));
        }
        let record: Record = match serde_json::from_str(raw) {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("its partial record is not valid: {e}"))),
        };
        let p = match check_record(&record, layout) {
            Ok(p) => p,
            Err(why) => return Ok(Err(why)),
        };
        let t = p.round.tensors.len();
        let ids = match rows::<32>(buf, layout, t, IDS_NAME)? {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        let signers = match rows::<32>(buf, layout, t + 1, SIGNERS_NAME)? {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        let nonces = match rows::<NONCE_LEN>(buf, layout, t + 2, NONCES_NAME)? {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        Ok(p.with_ids(ids, signers, nonces))
    }

    /// The partial with its ids, checked against its count: at most one of each per
    /// update counted, and no content id or nonce twice.
    fn with_ids(
        mut self,
        ids: Vec<[u8; 32]>,
        signers: Vec<SignerId>,
        nonces: Vec<Nonce>,
    ) -> std::result::Result<Partial, String> {
        for (what, len) in [
            ("content ids", ids.len()),
            ("signers", signers.len()),
            ("nonces", nonces.len()),
        ] {
            if len as u64 > self.count {
                return Err(format!(
                    "it lists {len} {what} for {} updates counted",
                    self.count
                ));
            }
        }
        let mut seen = HashSet::with_capacity(ids.len());
        if let Some(dup) = ids.iter().find(|id| !seen.insert(**id)) {
            return Err(format!(
                "it lists content id {}... twice",
                &hex32(dup)[..16]
            ));
        }
        let mut seen = HashSet::with_capacity(nonces.len());
        if nonces.iter().any(|n| !seen.insert(*n)) {
            return Err("it lists a nonce twice".into());
        }
        self.content_ids = ids;
        self.signers = signers;
        self.nonces = nonces;
        Ok(self)
    }
}

/// Check the record's fields against each other and against the payload's tensors.
fn check_record(r: &Record, layout: &Layout) -> std::result::Result<Partial, String> {
    if r.version != PARTIAL_VERSION {
        return Err(format!(
            "its partial record is version {}, this build reads version {PARTIAL_VERSION}",
            r.version
        ));
    }
    let precision = match r.accumulate.as_str() {
        "auto" => Precision::Auto,
        "float64" => Precision::Float64,
        other => {
            return Err(format!(
                "its \"accumulate\" {other:?} is not \"auto\" or \"float64\""
            ))
        }
    };
    let n = layout.entries.len();
    if n < 3 || r.dtypes.len() != n - 3 || r.bounds.len() != n - 3 {
        return Err(format!(
            "it has {n} tensors, {} dtypes and {} bounds: a partial aggregate has one dtype and \
             one bound per sum and three id tensors",
            r.dtypes.len(),
            r.bounds.len()
        ));
    }
    let mut specs = Vec::with_capacity(n - 3);
    for ((e, dtype), &bound) in layout.entries.iter().zip(&r.dtypes).zip(&r.bounds) {
        let dtype = DType::parse(dtype).map_err(|e| e.to_string())?;
        if !super::round::averageable(dtype) {
            return Err(format!(
                "tensor {:?}: dtype {dtype} cannot be averaged",
                e.name
            ));
        }
        let want = sum_dtype(dtype, precision);
        if e.dtype != want {
            return Err(format!(
                "tensor {:?}: its sums are {}, an accumulator of {} tensors with accumulate={:?} \
                 keeps {want}",
                e.name, e.dtype, dtype, r.accumulate
            ));
        }
        if !e.pipeline.is_lossless() || e.pipeline.needs_base() {
            return Err(format!(
                "tensor {:?}: its sums are stored with {}, not losslessly without a base",
                e.name, e.pipeline
            ));
        }
        check_number("bound", bound, sum_limit(dtype, precision))
            .map_err(|why| format!("tensor {:?}: {why}", e.name))?;
        specs.push(TensorSpec {
            name: e.name.clone(),
            dtype,
            shape: e.shape.clone(),
        });
    }
    let base = r.base.as_deref().map(|b| id_of("base", b)).transpose()?;
    let round = Round::new(specs, base).map_err(|e| e.to_string())?;
    if r.count > MAX_COUNT {
        return Err(format!("its count {} is above 2^53", r.count));
    }
    let max_weight = super::MAX_WEIGHT * (r.count as f64);
    check_number("total weight", r.total_weight, max_weight)?;
    let kind = match (r.kind.as_deref(), r.difference_base.as_deref()) {
        (None, None) => None,
        (Some("model"), None) => Some(Kind::Model),
        (Some("difference"), Some(b)) => Some(Kind::Difference(id_of("difference_base", b)?)),
        (k, b) => {
            return Err(format!(
                "its \"kind\" {k:?} with \"difference_base\" {b:?} is not null, \"model\", or \
                 \"difference\" with a base id"
            ))
        }
    };
    if kind.is_some() != (r.count > 0) {
        return Err(format!(
            "it counts {} updates and says they hold {}",
            r.count,
            r.kind.as_deref().unwrap_or("nothing")
        ));
    }
    if r.count == 0 && r.bounds.iter().any(|&b| b != 0.0) {
        return Err("it counts no update, and its sums' bounds are not zero".into());
    }
    let opts = Options {
        clip_norm: r.clip_norm,
        max_norm: r.max_norm,
        ..Options::default()
    };
    opts.check().map_err(|e| format!("its {e}"))?;
    if let Some(s) = &r.structure {
        crate::format::structure::validate(s, round.tensors.len()).map_err(|e| e.to_string())?;
    }
    Ok(Partial {
        round,
        number: r.round,
        count: r.count,
        total_weight: r.total_weight,
        precision,
        clip_norm: r.clip_norm,
        max_norm: r.max_norm,
        kind,
        bounds: r.bounds.clone(),
        structure: r.structure.clone(),
        content_ids: Vec::new(),
        signers: Vec::new(),
        nonces: Vec::new(),
    })
}
