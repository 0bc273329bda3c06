//! The survey of an update, before anything of it is added: checksums verified, every
//! tensor read (decoded into a per-thread scratch block) and scanned, and the verdict:
//! refused (a value that is not finite, a norm above `max_norm`, weights that could
//! overflow the sums), or accepted with its clipping factor. The batch mean, which has
//! every update in hand, scans while it adds instead (`mean.rs`) and surveys only the
//! updates that then need a reason ([`summarize`]).

use rayon::prelude::*;

use super::kernels::{scan, scan_on, Scan, BLOCK};
use super::{about_update, base_of, sum_limit, uses_f64, Contribution, Options, Round};
use crate::error::Result;

/// Bytes per step of the fused hash-and-scan of a raw tensor (cache-sized).
const FUSED_BYTES: usize = 256 << 10;

/// What the survey found about one update.
#[derive(Debug, Clone)]
pub(super) struct Survey {
    /// L2 norm of the update's contribution `d` over all its tensors (NaN when the
    /// options need no norm).
    pub norm: f64,
    /// Largest `|d|` per round tensor.
    pub max_abs: Vec<f64>,
    /// Why the update is refused, when its values are not all finite.
    pub bad: Option<String>,
}

/// Whether the options need the updates' norms.
fn wants_norm(opts: &Options) -> bool {
    opts.clip_norm.is_some() || opts.max_norm.is_some()
}

/// Survey `updates` (in parallel over the round's tensors; each worker reuses one
/// scratch block). `Err` when a payload is bad (checksum, corrupt codec data): that
/// error names the update.
pub(super) fn survey(
    round: &Round,
    base: Option<&[&[u8]]>,
    updates: &[&Contribution<'_>],
    opts: &Options,
) -> Result<Vec<Survey>> {
    if opts.verify {
        for c in updates {
            c.source
                .check_padding()
                .map_err(|e| about_update(c.id, e))?;
        }
    }
    let norm = wants_norm(opts);
    let per_tensor: Vec<Vec<Scan>> = (0..round.tensors.len())
        .into_par_iter()
        .map_init(Vec::new, |scratch, t| {
            updates
                .iter()
                .map(|c| scan_one(round, base, c, t, scratch, opts, opts.verify, norm))
                .collect::<Result<Vec<Scan>>>()
        })
        .collect::<Result<_>>()?;
    summarize(round, base, updates, per_tensor, opts)
}

/// Scan update `c`'s round tensor `t` (hashing raw tensors in the same pass when
/// `verify`; decoding coded ones into `scratch`).
#[allow(clippy::too_many_arguments)]
fn scan_one(
    round: &Round,
    base: Option<&[&[u8]]>,
    c: &Contribution<'_>,
    t: usize,
    scratch: &mut Vec<u8>,
    opts: &Options,
    verify: bool,
    norm: bool,
) -> Result<Scan> {
    let spec = &round.tensors[t];
    let b = base_of(round, base, t);
    let rel = b.filter(|_| !c.kind.is_difference()).map(|b| b.data);
    let f64_sums = uses_f64(spec.dtype, opts.precision);
    let run = |x: &[u8], rel: Option<&[u8]>| {
        if f64_sums {
            scan::<f64>(spec.dtype, x, rel, norm)
        } else {
            scan::<f32>(spec.dtype, x, rel, norm)
        }
    };
    let j = c.index[t];
    let found = match c.source.in_place(j) {
        Some((x, hash)) => scan_in_place(spec.dtype, x, rel, hash.filter(|_| verify), run)
            .map_err(|e| e.in_tensor(&spec.name)),
        None => scan_coded(spec.dtype, c, j, scratch, b, rel, verify, f64_sums, norm).and_then(
            |blockwise| match blockwise {
                Some(s) => Ok(s),
                None => c.source.values(j, scratch, b, verify).map(|x| run(x, rel)),
            },
        ),
    };
    found.map_err(|e| about_update(c.id, e))
}

/// Scan a coded tensor decoded block by block into `scratch` (one codec block, not the
/// whole tensor: `Source::for_each_block`), or None when it is not read so.
#[allow(clippy::too_many_arguments)]
fn scan_coded(
    dtype: crate::dtype::DType,
    c: &Contribution<'_>,
    j: usize,
    scratch: &mut Vec<u8>,
    base: Option<crate::format::TensorView<'_>>,
    rel: Option<&[u8]>,
    verify: bool,
    f64_sums: bool,
    norm: bool,
) -> Result<Option<Scan>> {
    let size = dtype.itemsize();
    let mut out = Scan::default();
    let blockwise = c
        .source
        .for_each_block(j, scratch, base, verify, BLOCK, |at, x| {
            let rel = rel.map(|r| &r[at * size..at * size + x.len()]);
            if f64_sums {
                scan_on::<f64>(&mut out, at, dtype, x, rel, norm)
            } else {
                scan_on::<f32>(&mut out, at, dtype, x, rel, norm)
            }
        })?;
    Ok(blockwise.then_some(out))
}

/// Scan a tensor read in place, hashing it in the same pass when its checksum is given.
pub(super) fn scan_in_place(
    dtype: crate::dtype::DType,
    x: &[u8],
    base: Option<&[u8]>,
    hash: Option<&[u8; 32]>,
    run: impl Fn(&[u8], Option<&[u8]>) -> Scan,
) -> Result<Scan> {
    let Some(expected) = hash else {
        return Ok(run(x, base));
    };
    let step = FUSED_BYTES / dtype.itemsize() * dtype.itemsize();
    let mut h = blake3::Hasher::new();
    let mut out = Scan::default();
    for (k, part) in x.chunks(step.max(1)).enumerate() {
        h.update(part);
        let b = base.map(|b| &b[k * step..k * step + part.len()]);
        out.join(run(part, b), k * step / dtype.itemsize());
    }
    if h.finalize().as_bytes() != expected {
        return Err(crate::error::Error::checksum(
            crate::error::Checked::TensorBytes,
        ));
    }
    Ok(out)
}

/// Each update's survey from its per-tensor scans (`per_tensor[t][u]`). A scan that saw
/// a value that is not finite without locating it (the fused pass of the mean) is
/// scanned again to name the element.
pub(super) fn summarize(
    round: &Round,
    base: Option<&[&[u8]]>,
    updates: &[&Contribution<'_>],
    per_tensor: Vec<Vec<Scan>>,
    opts: &Options,
) -> Result<Vec<Survey>> {
    let norm = wants_norm(opts);
    let mut scratch = Vec::new();
    updates
        .iter()
        .enumerate()
        .map(|(u, c)| {
            let mut sum_sq = 0f64;
            let mut bad = None;
            let mut max_abs = Vec::with_capacity(per_tensor.len());
            for (t, scans) in per_tensor.iter().enumerate() {
                let mut s = scans[u];
                if s.non_finite && s.bad.is_none() && bad.is_none() {
                    s = scan_one(round, base, c, t, &mut scratch, opts, false, false)?;
                }
                sum_sq += s.sum_sq;
                if let (None, Some((i, v))) = (&bad, s.bad) {
                    bad = Some(format!(
                        "tensor {:?}: element {i} is {}: updates must be finite",
                        round.tensors[t].name,
                        if v.is_nan() {
                            "NaN".to_string()
                        } else {
                            format!("{v}")
                        }
                    ));
                }
                max_abs.push(s.max_abs);
            }
            Ok(Survey {
                norm: if norm { sum_sq.sqrt() } else { f64::NAN },
                max_abs,
                bad,
            })
        })
        .collect()
}

/// The verdict on a surveyed update of `weight`: `Err(reason)` when it is refused,
/// else its clipping factor. For sums (the mean), `bounds[t]` is the largest magnitude
/// the sums of tensor `t` can have reached with the updates accepted so far; an accepted
/// update adds its share, so that no sum can overflow.
pub(super) fn decide(
    round: &Round,
    opts: &Options,
    s: &Survey,
    weight: f64,
    bounds: Option<&mut [f64]>,
) -> std::result::Result<f64, String> {
    if let Some(why) = &s.bad {
        return Err(why.clone());
    }
    if wants_norm(opts) && !s.norm.is_finite() {
        return Err("its L2 norm overflows float64".into());
    }
    if let Some(max) = opts.max_norm {
        if s.norm > max {
            return Err(format!("its L2 norm {:.6e} exceeds max_norm={max}", s.norm));
        }
    }
    let scale = match opts.clip_norm {
        Some(clip) if s.norm > clip => clip / s.norm,
        _ => 1.0,
    };
    let Some(bounds) = bounds else {
        return Ok(scale);
    };
    let coef = weight * scale;
    let mut next = bounds.to_vec();
    for (t, (b, &m)) in next.iter_mut().zip(&s.max_abs).enumerate() {
        *b += coef * m;
        let spec = &round.tensors[t];
        let limit = sum_limit(spec.dtype, opts.precision);
        if b.is_nan() || *b > limit {
            return Err(format!(
                "tensor {:?}: its values could overflow the sums (up to {m:e}, weighted by \
                 {coef:e}, beyond the limit of {limit:e}); use smaller weights or \
                 accumulate=\"float64\"",
                spec.name
            ));
        }
    }
    bounds.copy_from_slice(&next);
    Ok(scale)
}
