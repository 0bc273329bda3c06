//! Aggregation of encoded federated updates: FedAvg, and the robust aggregators Flower
//! ships as strategies (FedMedian, FedTrimmedAvg).
//!
//! A [`Round`] fixes what the round expects: tensor names, dtypes and shapes, and the
//! id of the base (global) model the updates were made against. [`Round::check`] tells
//! why an update does not fit. Every update then goes through a *survey* (`survey.rs`):
//! its checksums are verified, its values read (decoded one tensor at a time into a
//! per-thread scratch block) and scanned for what would poison the round — a value
//! that is not finite, a norm above `max_norm`, weights that could overflow the sums —
//! before anything is added, so a refused or bad update changes nothing.
//! [`aggregate`] averages many updates at once (`batch.rs`, the robust methods in
//! `robust.rs`); [`Accumulator`] is the streaming form for a server that receives
//! updates one at a time (`stream.rs`); the arithmetic lives in `kernels.rs`. An
//! accumulator's sums travel between servers as a *partial aggregate* (`partial.rs`),
//! which another accumulator merges (`merge.rs`): sharded aggregation.
//!
//! Semantics. With a base `b`, every update contributes `d = x - b` (a model `x`) or
//! `d = x` (an update stored as a difference); the mean is `b + Σ wᵢ sᵢ dᵢ / Σ wᵢ`,
//! where `sᵢ = min(1, clip / ‖dᵢ‖)` when clipping and 1 otherwise. Without a base the
//! updates are averaged as they decode: `Σ wᵢ sᵢ xᵢ / Σ wᵢ`. Float tensors accumulate in
//! float32 (float64 for float64 tensors, or when asked); integer tensors accumulate in
//! float64 and are rounded half to even (saturating) on output. The median and the
//! trimmed mean are taken element by element over the `sᵢ dᵢ`, unweighted (as Flower's
//! FedMedian and FedTrimmedAvg are), in float64.

mod batch;
mod kernels;
mod mean;
mod merge;
pub mod partial;
mod record;
mod robust;
mod round;
pub mod stream;
mod survey;

pub use batch::{aggregate, Outcome};
pub use partial::{Extras, Partial, PartialWriter, PARTIAL_KEY};
pub use record::{UpdateRecord, MAX_CLIENT_LEN, MAX_RECORD_LEN, UPDATE_KEY};
pub use round::{Contribution, Kind, Round, Source, TensorSpec};
pub use stream::Accumulator;

pub(crate) use round::about_update;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The largest weight (sample count) accepted: 2^53, the largest count a float64 holds
/// exactly.
pub const MAX_WEIGHT: f64 = 9_007_199_254_740_992.0;

/// Why a weight is not acceptable: it must be a finite number in `0..=MAX_WEIGHT`.
pub fn check_weight(w: f64) -> std::result::Result<(), String> {
    if !w.is_finite() {
        return Err(format!("{w} is not a finite number"));
    }
    if w < 0.0 {
        return Err(format!("{w} is negative"));
    }
    if w > MAX_WEIGHT {
        return Err(format!("{w:e} is above the limit of 2^53"));
    }
    Ok(())
}

/// Accumulator precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// float32 for float16/bfloat16/float32 tensors, float64 for float64 and integers.
    #[default]
    Auto,
    /// float64 for every tensor.
    Float64,
}

/// How the updates are combined.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Method {
    /// The weighted mean (FedAvg).
    #[default]
    Mean,
    /// The element-wise median, unweighted (FedMedian).
    Median,
    /// The element-wise mean of what is left after dropping `floor(β·n)` of the `n`
    /// values at each end, unweighted (FedTrimmedAvg); `0 ≤ β < 0.5`.
    TrimmedMean(f64),
}

impl Method {
    /// Parse `"mean"`, `"median"` or `"trimmed_mean:β"`.
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "mean" => Ok(Method::Mean),
            "median" => Ok(Method::Median),
            _ => match s.strip_prefix("trimmed_mean:").map(str::parse::<f64>) {
                Some(Ok(b)) if (0.0..0.5).contains(&b) => Ok(Method::TrimmedMean(b)),
                _ => Err(Error::input(format!(
                    "method must be \"mean\", \"median\" or \"trimmed_mean:β\" with 0 <= β < 0.5 \
                     (e.g. \"trimmed_mean:0.1\"), got {s:?}"
                ))),
            },
        }
    }
}

/// Options of [`aggregate`] and [`Accumulator`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Scale every update's contribution down to this L2 norm (over all its tensors).
    pub clip_norm: Option<f64>,
    /// Refuse updates whose contribution has an L2 norm above this.
    pub max_norm: Option<f64>,
    /// Accumulator precision.
    pub precision: Precision,
    /// Check each stored tensor's checksum before using it.
    pub verify: bool,
    /// How updates are combined ([`aggregate`] only; the accumulator is a mean).
    pub method: Method,
    /// `out` is scratch that the caller drops when the round is refused ([`aggregate`]
    /// only). Then the plain mean writes it while it checks the updates (one pass);
    /// otherwise it checks first, and a refused round leaves `out` as it was.
    pub scratch_out: bool,
}

impl Options {
    /// Check the options' numbers.
    pub fn check(&self) -> Result<()> {
        for (name, v) in [("clip norm", self.clip_norm), ("max norm", self.max_norm)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::input(format!(
                        "{name} must be a positive finite number, got {v}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// True when the tensor's sums are kept in float64.
fn uses_f64(dtype: DType, precision: Precision) -> bool {
    precision == Precision::Float64 || !matches!(dtype, DType::F16 | DType::BF16 | DType::F32)
}

/// The largest magnitude the sums of a tensor of `dtype` may reach.
fn sum_limit(dtype: DType, precision: Precision) -> f64 {
    use kernels::Acc;
    if uses_f64(dtype, precision) {
        <f64 as Acc>::LIMIT
    } else {
        <f32 as Acc>::LIMIT
    }
}

/// The round tensor `t`'s base, if there is a base.
fn base_of<'b>(
    round: &'b Round,
    base: Option<&[&'b [u8]]>,
    t: usize,
) -> Option<crate::format::TensorView<'b>> {
    base.map(|b| {
        let spec = &round.tensors[t];
        crate::format::TensorView {
            name: &spec.name,
            dtype: spec.dtype,
            shape: &spec.shape,
            data: b[t],
        }
    })
}

/// Check that `base` (when the round has one) and `out` fit the round.
fn check_buffers(round: &Round, base: Option<&[&[u8]]>, out: &[&mut [u8]]) -> Result<()> {
    let n = round.tensors.len();
    if out.len() != n {
        return Err(Error::input(format!(
            "{} output buffers for {n} tensors",
            out.len()
        )));
    }
    check_base(round, base)?;
    for (t, spec) in round.tensors.iter().enumerate() {
        if out[t].len() != spec.nbytes() {
            return Err(Error::input(format!(
                "output buffer of {} bytes, {} needed",
                out[t].len(),
                spec.nbytes()
            ))
            .in_tensor(&spec.name));
        }
    }
    Ok(())
}

/// Check that `base` is given exactly when the round has one, tensor for tensor.
fn check_base(round: &Round, base: Option<&[&[u8]]>) -> Result<()> {
    let n = round.tensors.len();
    match (base, round.base_id.is_some()) {
        (Some(b), true) if b.len() != n => Err(Error::input(format!(
            "{} base tensors for {n} tensors",
            b.len()
        ))),
        (Some(b), true) => {
            for (spec, b) in round.tensors.iter().zip(b) {
                if b.len() != spec.nbytes() {
                    return Err(Error::input(format!(
                        "base of {} bytes, {} needed",
                        b.len(),
                        spec.nbytes()
                    ))
                    .in_tensor(&spec.name));
                }
            }
            Ok(())
        }
        (Some(_), false) => Err(Error::input("a base was given to a round without one")),
        (None, true) => Err(Error::input("the round has a base: pass its tensors")),
        (None, false) => Ok(()),
    }
}

#[cfg(test)]
mod blockwise_tests;
#[cfg(test)]
mod partial_tests;
#[cfg(test)]
mod tests;
