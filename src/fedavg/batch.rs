//! [`aggregate`]: many updates at once, tensor by tensor in parallel.

use std::collections::HashMap;

use rayon::prelude::*;

use super::kernels::{as_acc_mut, finish_in_place, Scan};
use super::mean::Sums;
use super::survey::{decide, summarize, survey};
use super::{
    base_of, check_buffers, check_weight, robust, uses_f64, Contribution, Method, Options, Round,
};
use crate::dtype::scalar::Float;
use crate::error::{Error, Result};
use crate::format::hex32;
use crate::memory::try_zeroed;

/// What [`aggregate`] did with the updates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Updates refused (their `id` and why): a value that is not finite, a norm above
    /// `max_norm`, a payload given twice, weights that could overflow the sums.
    pub refused: Vec<(usize, String)>,
    /// Per update given, in order: the L2 norm of its contribution (NaN if refused).
    pub norms: Vec<f64>,
    /// Per update given: the factor it was scaled by (0 if refused).
    pub scales: Vec<f64>,
    /// False when updates were refused and the caller asked not to compute without
    /// them, or when every update was refused.
    pub computed: bool,
}

/// Combine `updates` into `out` (one buffer per round tensor, exactly its size) by
/// `opts.method`, in parallel over tensors; `base` holds the round's base tensors (in
/// round order) when the round has one. Every update must come from [`Round::check`]
/// on this round. Refused updates are left out when `skip_refused`, else nothing is
/// computed and the refusals come back. A bad payload (checksum, corrupt codec data)
/// is an error naming its update.
pub fn aggregate(
    round: &Round,
    base: Option<&[&[u8]]>,
    updates: &[Contribution<'_>],
    out: Vec<&mut [u8]>,
    opts: &Options,
    skip_refused: bool,
) -> Result<Outcome> {
    opts.check()?;
    check_buffers(round, base, &out)?;
    for c in updates {
        check_weight(c.weight)
            .map_err(|why| Error::input(format!("weight {why}")).in_update(c.id))?;
    }
    let mut outcome = Outcome {
        refused: Vec::new(),
        norms: vec![f64::NAN; updates.len()],
        scales: vec![0.0; updates.len()],
        computed: false,
    };
    // The same payload twice would count twice.
    let mut first: HashMap<[u8; 32], usize> = HashMap::new();
    let mut fresh = Vec::with_capacity(updates.len());
    for (k, c) in updates.iter().enumerate() {
        match c
            .content_id()
            .map(|id| (id, *first.entry(id).or_insert(c.id)))
        {
            Some((id, earlier)) if earlier != c.id => outcome.refused.push((
                c.id,
                format!(
                    "it is the same payload as update {earlier} (content id {}...)",
                    &hex32(&id)[..16]
                ),
            )),
            _ => fresh.push(k),
        }
    }
    let refs: Vec<&Contribution<'_>> = fresh.iter().map(|&k| &updates[k]).collect();
    // The mean without norms scans while it adds, hoping for no refusal (then one pass);
    // everything else surveys first.
    // A refused round must leave the caller's `out` as it was, so `out` is written before
    // the updates are known to be good only when it is scratch or refusals are skipped.
    let optimistic = opts.method == Method::Mean
        && opts.clip_norm.is_none()
        && opts.max_norm.is_none()
        && (opts.scratch_out || skip_refused);
    let mut out = out;
    let surveys = if optimistic {
        if opts.verify {
            for c in &refs {
                c.source
                    .check_padding()
                    .map_err(|e| super::about_update(c.id, e))?;
            }
        }
        let ones = vec![1.0; refs.len()];
        let scans = mean(round, base, &refs, &ones, &mut out, opts, opts.verify)?;
        summarize(round, base, &refs, scans, opts)?
    } else {
        survey(round, base, &refs, opts)?
    };
    let mut bounds = vec![0f64; round.tensors.len()];
    let mut accepted = Vec::with_capacity(refs.len());
    for ((&k, c), s) in fresh.iter().zip(&refs).zip(&surveys) {
        outcome.norms[k] = s.norm;
        let sums = (opts.method == Method::Mean).then_some(&mut bounds[..]);
        match decide(round, opts, s, c.weight, sums) {
            Ok(scale) => {
                outcome.scales[k] = scale;
                accepted.push(k);
            }
            Err(why) => outcome.refused.push((c.id, why)),
        }
    }
    outcome.refused.sort_by_key(|r| r.0);
    if (!outcome.refused.is_empty() && !skip_refused)
        || (accepted.is_empty() && !updates.is_empty())
    {
        // Nothing computed (`out` holds no result): the caller reports the refusals.
        return Ok(outcome);
    }
    outcome.computed = true;
    if optimistic && accepted.len() == refs.len() {
        return Ok(outcome);
    }
    let chosen: Vec<&Contribution<'_>> = accepted.iter().map(|&k| &updates[k]).collect();
    let scales: Vec<f64> = accepted.iter().map(|&k| outcome.scales[k]).collect();
    match opts.method {
        Method::Mean => {
            mean(round, base, &chosen, &scales, &mut out, opts, false)?;
        }
        method => robust::combine(round, base, &chosen, &scales, method, out)?,
    }
    Ok(outcome)
}

/// The weighted mean of `updates` (each scaled by `scales[u]`) into `out`, and what each
/// update's tensors held (`[tensor][update]`); with `verify`, raw tensors' checksums are
/// checked in the same pass.
fn mean(
    round: &Round,
    base: Option<&[&[u8]]>,
    updates: &[&Contribution<'_>],
    scales: &[f64],
    out: &mut [&mut [u8]],
    opts: &Options,
    verify: bool,
) -> Result<Vec<Vec<Scan>>> {
    let total: f64 = updates.iter().map(|c| c.weight).sum();
    if total.is_nan() || total <= 0.0 {
        return Err(Error::input(
            "nothing to average: no updates accepted, or their weights sum to zero",
        ));
    }
    let coef: Vec<f64> = updates
        .iter()
        .zip(scales)
        .map(|(c, s)| c.weight * s)
        .collect();
    let inv_w = 1.0 / total;
    let mut jobs: Vec<(usize, &mut [u8])> = out.iter_mut().map(|o| &mut **o).enumerate().collect();
    // Largest tensors first, so that no big one is left for the end.
    jobs.sort_by_key(|(_, o)| std::cmp::Reverse(o.len()));
    let mut scans: Vec<(usize, Vec<Scan>)> = jobs
        .into_par_iter()
        .map_init(Vec::new, |scratch, (t, out)| {
            let spec = &round.tensors[t];
            let b = base_of(round, base, t);
            let f64_sums = uses_f64(spec.dtype, opts.precision);
            // Sums of the tensor's own dtype accumulate in the output buffer itself.
            macro_rules! in_out {
                ($a:ty) => {
                    if <$a as Float>::DTYPE == spec.dtype {
                        if let Some(acc) = as_acc_mut::<$a>(out) {
                            acc.fill(0.0);
                            let s = super::mean::add_tensor(
                                acc, spec, t, b, updates, &coef, scratch, verify,
                            )?;
                            finish_in_place(acc, b.map(|b| b.data), inv_w);
                            return Ok((t, s));
                        }
                    }
                };
            }
            let mut sums = if f64_sums {
                in_out!(f64);
                Sums::F64(try_zeroed(spec.numel(), "the sums")?)
            } else {
                in_out!(f32);
                Sums::F32(try_zeroed(spec.numel(), "the sums")?)
            };
            let s = sums.add(spec, t, b, updates, &coef, scratch, verify)?;
            sums.finish(spec, b.map(|b| b.data), inv_w, out);
            Ok((t, s))
        })
        .collect::<Result<_>>()?;
    scans.sort_by_key(|(t, _)| *t);
    Ok(scans.into_iter().map(|(_, s)| s).collect())
}
