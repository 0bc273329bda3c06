//! [`Accumulator::merge`]: another accumulator's partial aggregate (`partial.rs`) added
//! into this one's sums. The partial is checked whole before anything of it is added —
//! its round, options and ids against this accumulator's, then every value of its sums
//! (checksums, finite, within the bounds it declares, no overflow) — so that a refused
//! or bad partial leaves the sums bit for bit as they were. Its sums are read one tensor
//! at a time (in place when stored raw, else decoded into a per-thread scratch block),
//! once to check them and once to add them: no second model is ever held.
//!
//! Merging adds sums: `S += S'`, `W += W'`. The result of merging partials in a fixed
//! order is therefore deterministic, and equal bit for bit to one accumulator over all
//! the updates whenever the additions are exact (docs/federated.md, "Partial
//! aggregates", says when, and bounds the difference otherwise).

use rayon::prelude::*;

use super::kernels::{scan, Scan};
use super::partial::{sum_dtype, Partial};
use super::survey::scan_in_place;
use super::{sum_limit, Accumulator, Contribution, Kind, Source, TensorSpec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::{hex32, Layout};

/// At most this many problems are listed in one reason.
const MAX_LISTED: usize = 3;

fn base_name(id: Option<&[u8; 32]>) -> String {
    id.map_or_else(|| "none".to_string(), hex32)
}

fn listed(mut problems: Vec<String>) -> String {
    let more = problems.len().saturating_sub(MAX_LISTED);
    problems.truncate(MAX_LISTED);
    let mut reason = problems.join("; ");
    if more > 0 {
        reason.push_str(&format!(" (and {more} more)"));
    }
    reason
}

impl Accumulator {
    /// Why the partial aggregate `p` cannot be merged into this accumulator — another
    /// round (names, dtypes, shapes, base), other options (precision, clipping, norm
    /// limit), updates of another kind, an update already counted here — or, when it
    /// can, the index of each round tensor's sums in `p`.
    pub fn check_partial(&self, p: &Partial) -> std::result::Result<Vec<usize>, String> {
        let mine = &self.round.tensors;
        let mut problems = Vec::new();
        let mut index = vec![usize::MAX; mine.len()];
        let mut found = vec![false; mine.len()];
        for (j, s) in p.round.tensors.iter().enumerate() {
            match self.round.index_of(&s.name) {
                None => problems.push(format!("unexpected tensor {:?}", s.name)),
                Some(t) => {
                    found[t] = true;
                    if mine[t].dtype != s.dtype || mine[t].shape != s.shape {
                        problems.push(format!(
                            "tensor {:?} is {}{:?}, the round expects {}{:?}",
                            s.name, s.dtype, s.shape, mine[t].dtype, mine[t].shape
                        ));
                    } else {
                        index[t] = j;
                    }
                }
            }
        }
        for (t, _) in found.iter().enumerate().filter(|(_, f)| !**f) {
            problems.push(format!("missing tensor {:?}", mine[t].name));
        }
        if !problems.is_empty() {
            return Err(listed(problems));
        }
        let base = self.round.base_id.as_ref();
        if p.round.base_id.as_ref() != base {
            return Err(format!(
                "it was aggregated against base {}, this round's base is {}",
                base_name(p.round.base_id.as_ref()),
                base_name(base)
            ));
        }
        if p.precision != self.opts.precision {
            return Err(
                "its sums were accumulated at another precision (accumulate=) than this \
                 aggregator's"
                    .into(),
            );
        }
        let bits = |v: Option<f64>| v.map(f64::to_bits);
        for (what, theirs, ours) in [
            ("clip_norm", p.clip_norm, self.opts.clip_norm),
            ("max_norm", p.max_norm, self.opts.max_norm),
        ] {
            if bits(theirs) != bits(ours) {
                let show =
                    |v: Option<f64>| v.map_or_else(|| "None".to_string(), |v| format!("{v:?}"));
                return Err(format!(
                    "it was aggregated with {what}={}, this aggregator has {what}={}",
                    show(theirs),
                    show(ours)
                ));
            }
        }
        match (base, self.first_kind, p.kind) {
            (Some(b), _, Some(Kind::Difference(d))) if *b != d => {
                return Err(format!(
                    "it holds differences against base {}, this round's base is {}",
                    hex32(&d),
                    hex32(b)
                ))
            }
            (None, Some(ours), Some(theirs)) if ours != theirs => {
                return Err(
                    "its updates are of another kind (models, or differences against another \
                     base) than this aggregator's, and without a base they cannot be averaged \
                     together (pass base=)"
                        .into(),
                )
            }
            _ => {}
        }
        if let Some(id) = p.content_ids.iter().find(|id| self.seen.contains(*id)) {
            return Err(format!(
                "it counts a payload already counted here (content id {}...)",
                &hex32(id)[..16]
            ));
        }
        if usize::try_from(p.count)
            .ok()
            .and_then(|c| self.count.checked_add(c))
            .is_none()
        {
            return Err(format!("its count {} overflows this aggregator's", p.count));
        }
        Ok(index)
    }

    /// Merge the partial aggregate `p`, read from the payload `buf` (parsed into
    /// `layout`, checked by [`Partial::read`]): `Ok(Err(reason))` when it is refused
    /// ([`Accumulator::check_partial`], a value of its sums that is not finite or above
    /// its declared bound, sums that could overflow), `Err` when the payload is corrupt
    /// (a checksum). Either way nothing changes.
    pub fn merge(
        &mut self,
        p: &Partial,
        buf: &[u8],
        layout: &Layout,
    ) -> Result<std::result::Result<(), String>> {
        if self.broken {
            return Err(Error::input(
                "this aggregator's sums were damaged by a payload that changed while it was \
                 added; it takes no more updates",
            ));
        }
        let index = match self.check_partial(p) {
            Ok(index) => index,
            Err(why) => return Ok(Err(why)),
        };
        let source = Source::Payload { buf, layout };
        let verify = self.opts.verify;
        if verify {
            source.check_padding()?;
        }
        // The sums as the partial stores them: the accumulator's own type.
        let specs: Vec<TensorSpec> = self
            .round
            .tensors
            .iter()
            .map(|s| TensorSpec {
                name: s.name.clone(),
                dtype: sum_dtype(s.dtype, self.opts.precision),
                shape: s.shape.clone(),
            })
            .collect();
        let scans: Vec<Scan> = (0..specs.len())
            .into_par_iter()
            .map_init(Vec::new, |scratch, t| {
                let spec = &specs[t];
                let run = |x: &[u8], _: Option<&[u8]>| match spec.dtype {
                    DType::F64 => scan::<f64>(DType::F64, x, None, false),
                    _ => scan::<f32>(DType::F32, x, None, false),
                };
                let j = index[t];
                match source.in_place(j) {
                    Some((x, hash)) => {
                        scan_in_place(spec.dtype, x, None, hash.filter(|_| verify), run)
                            .map_err(|e| e.in_tensor(&spec.name))
                    }
                    None => source
                        .values(j, scratch, None, verify)
                        .map(|x| run(x, None)),
                }
            })
            .collect::<Result<_>>()?;
        let mut bounds = self.bounds.clone();
        for (t, s) in scans.iter().enumerate() {
            let name = &specs[t].name;
            if let Some((i, v)) = s.bad {
                return Ok(Err(format!(
                    "tensor {name:?}: element {i} of its sums is {v}: sums must be finite"
                )));
            }
            // The bound is the sum of each update's weighted largest value: the sums may
            // pass it by their rounding errors, (n + 3) units in the last place at most.
            let declared = p.bounds[index[t]];
            let unit = match specs[t].dtype {
                DType::F64 => f64::EPSILON / 2.0,
                _ => f32::EPSILON as f64 / 2.0,
            };
            let slack = 1.0 + 1.01 * (p.count as f64 + 3.0) * unit;
            if s.max_abs > declared * slack {
                return Ok(Err(format!(
                    "tensor {name:?}: its sums reach {:e}, above the bound {declared:e} it \
                     declares",
                    s.max_abs
                )));
            }
            bounds[t] += declared.max(s.max_abs);
            let limit = sum_limit(self.round.tensors[t].dtype, self.opts.precision);
            if bounds[t].is_nan() || bounds[t] > limit {
                return Ok(Err(format!(
                    "tensor {name:?}: its sums could overflow this aggregator's (beyond the \
                     limit of {limit:e}); accumulate=\"float64\" on every server holds more"
                )));
            }
        }
        let c = Contribution {
            id: 0,
            source,
            kind: Kind::Difference([0; 32]),
            weight: 1.0,
            index,
        };
        let refs = [&c];
        let added = self
            .sums
            .par_iter_mut()
            .enumerate()
            .map_init(Vec::new, |scratch, (t, sums)| {
                sums.add(&specs[t], t, None, &refs, &[1.0], scratch, false)
                    .map(drop)
            })
            .collect::<Result<()>>();
        if let Err(e) = added {
            self.broken = true;
            return Err(e.explained(
                "the partial aggregate changed while it was merged (the aggregator takes no \
                 more updates)",
            ));
        }
        self.bounds = bounds;
        if let Some(kind) = p.kind {
            self.first_kind.get_or_insert(kind);
        }
        self.total_weight += p.total_weight;
        self.count += p.count as usize;
        self.seen.extend(p.content_ids.iter().copied());
        Ok(Ok(()))
    }
}
