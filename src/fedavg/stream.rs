//! [`Accumulator`]: the streaming form of the mean, for a server that receives updates
//! one at a time. Each update is surveyed before anything of it is added, so a refused
//! or bad update leaves the sums bit for bit as they were.

use std::collections::HashSet;

use rayon::prelude::*;

use super::mean::Sums;
use super::survey::{decide, survey};
use super::{
    base_of, check_base, check_buffers, check_weight, uses_f64, Contribution, Kind, Method,
    Options, Round, Source,
};
use crate::error::{Error, Result};
use crate::format::hex32;
use crate::memory::try_zeroed;

/// What [`Accumulator::add`] did with an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Added, with the L2 norm of its contribution and the factor it was scaled by.
    Added {
        /// L2 norm of the update's contribution.
        norm: f64,
        /// Clipping factor (1 unless clipped).
        scale: f64,
    },
    /// Not added, and why (nothing changed).
    Refused(String),
}

/// Running sums of a round's updates (one model of float32, float64 for float64 and
/// integer tensors, or when asked); [`Accumulator::finish_into`] writes the mean.
#[derive(Debug, Clone)]
pub struct Accumulator {
    pub(super) round: Round,
    pub(super) sums: Vec<Sums>,
    pub(super) opts: Options,
    pub(super) total_weight: f64,
    pub(super) count: usize,
    pub(super) first_kind: Option<Kind>,
    /// Largest magnitude each tensor's sums can have reached (see `survey::decide`).
    pub(super) bounds: Vec<f64>,
    /// Content ids of the payloads counted (added, or in a partial merged).
    pub(super) seen: HashSet<[u8; 32]>,
    /// Set if an add or a merge failed half-way (the payload's memory changed between
    /// the survey and the add): the sums cannot be trusted any more.
    pub(super) broken: bool,
}

impl Accumulator {
    /// Zeroed running sums for `round`; a format failure when they cannot be allocated.
    pub fn new(round: Round, opts: Options) -> Result<Accumulator> {
        opts.check()?;
        if opts.method != Method::Mean {
            return Err(Error::input(
                "a streaming aggregator computes the mean; use aggregate() for the median or \
                 the trimmed mean",
            ));
        }
        let sums = round
            .tensors
            .iter()
            .map(|spec| {
                Ok(if uses_f64(spec.dtype, opts.precision) {
                    Sums::F64(try_zeroed(spec.numel(), "the sums")?)
                } else {
                    Sums::F32(try_zeroed(spec.numel(), "the sums")?)
                })
            })
            .collect::<Result<_>>()?;
        Ok(Accumulator {
            bounds: vec![0.0; round.tensors.len()],
            round,
            sums,
            opts,
            total_weight: 0.0,
            count: 0,
            first_kind: None,
            seen: HashSet::new(),
            broken: false,
        })
    }

    /// The round the accumulator is for.
    pub fn round(&self) -> &Round {
        &self.round
    }

    /// Why `source` does not fit (see [`Round::check`]), taking earlier updates into
    /// account (their kind, and the payloads already added).
    pub fn check(
        &self,
        source: &Source<'_>,
        kind: Kind,
    ) -> std::result::Result<Vec<usize>, String> {
        if let Source::Payload { layout, .. } = source {
            if self.seen.contains(&layout.content_id) {
                return Err(format!(
                    "it is the same payload as one already added (content id {}...)",
                    &hex32(&layout.content_id)[..16]
                ));
            }
        }
        self.round.check(source, kind, self.first_kind)
    }

    /// Number of updates added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Sum of the weights added.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// Add one update (from [`Accumulator::check`]). It is surveyed first — checksums
    /// (when verifying), every value, its norm, the sums' headroom — and only then added,
    /// so that a refused update ([`Verdict::Refused`]) or a bad payload (an error)
    /// leaves every sum exactly as it was.
    pub fn add(&mut self, update: &Contribution<'_>, base: Option<&[&[u8]]>) -> Result<Verdict> {
        if self.broken {
            return Err(Error::input(
                "this aggregator's sums were damaged by a payload that changed while it was \
                 added; it takes no more updates",
            ));
        }
        check_base(&self.round, base)?;
        check_weight(update.weight)
            .map_err(|why| Error::input(format!("weight {why}")).in_update(update.id))?;
        if update.index.len() != self.round.tensors.len() {
            return Err(Error::input("update was not checked against this round"));
        }
        let id = update.content_id();
        if id.is_some_and(|id| self.seen.contains(&id)) {
            return Ok(Verdict::Refused(
                "it is the same payload as one already added".into(),
            ));
        }
        let s = &survey(&self.round, base, &[update], &self.opts)?[0];
        let mut bounds = self.bounds.clone();
        let scale = match decide(&self.round, &self.opts, s, update.weight, Some(&mut bounds)) {
            Ok(scale) => scale,
            Err(why) => return Ok(Verdict::Refused(why)),
        };
        let coef = [update.weight * scale];
        let refs = [update];
        let round = &self.round;
        let added = self
            .sums
            .par_iter_mut()
            .enumerate()
            .map_init(Vec::new, |scratch, (t, sums)| {
                let b = base_of(round, base, t);
                sums.add(&round.tensors[t], t, b, &refs, &coef, scratch, false)
                    .map(drop)
            })
            .collect::<Result<()>>();
        if let Err(e) = added {
            self.broken = true;
            return Err(e.explained(
                "the payload changed while it was added (the aggregator takes no more updates)",
            ));
        }
        self.bounds = bounds;
        self.first_kind.get_or_insert(update.kind);
        self.total_weight += update.weight;
        self.count += 1;
        if let Some(id) = id {
            self.seen.insert(id);
        }
        Ok(Verdict::Added {
            norm: s.norm,
            scale,
        })
    }

    /// Write the weighted mean into `out` (one buffer per round tensor).
    pub fn finish_into(&self, base: Option<&[&[u8]]>, out: Vec<&mut [u8]>) -> Result<()> {
        check_buffers(&self.round, base, &out)?;
        if self.total_weight <= 0.0 {
            return Err(Error::input(
                "nothing to average: no updates were added, or their weights sum to zero",
            ));
        }
        let inv_w = 1.0 / self.total_weight;
        out.into_par_iter()
            .zip(self.sums.par_iter())
            .enumerate()
            .for_each(|(t, (out, sums))| {
                let b = base_of(&self.round, base, t).map(|b| b.data);
                sums.finish(&self.round.tensors[t], b, inv_w, out);
            });
        Ok(())
    }
}
