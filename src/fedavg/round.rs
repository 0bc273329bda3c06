//! What a round expects of its updates ([`Round`]), where an update's tensors come from
//! ([`Source`]), and why an update does not fit ([`Round::check`]).

use std::collections::HashMap;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::hex32;
use crate::format::{Layout, TensorView};
use crate::memory::nbytes;
use crate::memory::try_grow;

/// At most this many problems are listed in one mismatch reason.
const MAX_LISTED: usize = 3;

/// One tensor of the round: what every update must hold under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, C order.
    pub shape: Vec<u64>,
}

impl TensorSpec {
    /// Number of elements (checked by [`Round::new`]).
    pub fn numel(&self) -> usize {
        self.nbytes() / self.dtype.itemsize()
    }

    /// Size in bytes (checked by [`Round::new`]).
    pub fn nbytes(&self) -> usize {
        nbytes(self.dtype, &self.shape).expect("checked by Round::new")
    }
}

/// Where an update's tensors come from.
#[derive(Debug)]
pub enum Source<'a> {
    /// An encoded payload (any codec) and its validated layout.
    Payload {
        /// The whole payload.
        buf: &'a [u8],
        /// What [`crate::format::parse`] made of it.
        layout: &'a Layout,
    },
    /// Tensors already in memory.
    Tensors(&'a [TensorView<'a>]),
}

/// What an update's tensors hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The client's model (a delta codec decodes it against the base).
    Model,
    /// The difference (new − old) against the base whose id is given.
    Difference([u8; 32]),
}

impl Kind {
    /// True for a difference: its tensors are not relative to the base.
    pub fn is_difference(self) -> bool {
        matches!(self, Kind::Difference(_))
    }
}

/// One update that fits the round: where it comes from, its weight, and for each of
/// the round's tensors the index of that tensor in the update.
#[derive(Debug)]
pub struct Contribution<'a> {
    /// The update's number, as the caller counts (errors and reasons name it).
    pub id: usize,
    /// The update's tensors.
    pub source: Source<'a>,
    /// What they hold.
    pub kind: Kind,
    /// Its weight (e.g. the client's sample count); see [`super::check_weight`].
    pub weight: f64,
    /// `index[t]` is the update's tensor for the round's tensor `t` (from [`Round::check`]).
    pub index: Vec<usize>,
}

impl Contribution<'_> {
    /// The payload's content id; `None` for tensors given in memory.
    pub fn content_id(&self) -> Option<[u8; 32]> {
        match &self.source {
            Source::Payload { layout, .. } => Some(layout.content_id),
            Source::Tensors(_) => None,
        }
    }
}

/// What a round expects of its updates.
#[derive(Debug, Clone)]
pub struct Round {
    pub(super) tensors: Vec<TensorSpec>,
    by_name: HashMap<String, usize>,
    pub(super) base_id: Option<[u8; 32]>,
}

/// Whether tensors of `dtype` can be averaged.
pub(super) fn averageable(dtype: DType) -> bool {
    !matches!(
        dtype,
        DType::Bool | DType::C64 | DType::C128 | DType::F8E4M3 | DType::F8E5M2
    )
}

impl Round {
    /// A round over `tensors` (in result order); `base_id` is the id
    /// ([`crate::format::tensors_id`]) of the base model, when there is one.
    pub fn new(tensors: Vec<TensorSpec>, base_id: Option<[u8; 32]>) -> Result<Round> {
        let mut by_name = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(Error::input(format!(
                    "tensor name {:?} appears twice",
                    t.name
                )));
            }
            if !averageable(t.dtype) {
                return Err(Error::input(format!(
                    "dtype {} cannot be averaged (float16, bfloat16, float32, float64 and \
                     integer tensors can)",
                    t.dtype
                ))
                .in_tensor(&t.name));
            }
            if nbytes(t.dtype, &t.shape).is_none() {
                return Err(
                    Error::input(format!("shape {:?} is too large", t.shape)).in_tensor(&t.name)
                );
            }
        }
        Ok(Round {
            tensors,
            by_name,
            base_id,
        })
    }

    /// The round's tensors, in result order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// The position of the tensor called `name` in the round, if it has one.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The base model's id, if the round has a base.
    pub fn base_id(&self) -> Option<&[u8; 32]> {
        self.base_id.as_ref()
    }

    /// Why `source` (holding `kind`) does not fit the round, or, when it fits, the index
    /// of each round tensor in it. `first_kind` is the kind of the updates already
    /// accepted without a base: models and differences cannot be mixed then.
    pub fn check(
        &self,
        source: &Source<'_>,
        kind: Kind,
        first_kind: Option<Kind>,
    ) -> std::result::Result<Vec<usize>, String> {
        self.check_base(source, kind, first_kind)?;
        // Structure: the same names, dtypes and shapes.
        let mut problems = Vec::new();
        let mut index = vec![usize::MAX; self.tensors.len()];
        let mut visit =
            |j: usize, name: &str, dtype: DType, shape: &[u64]| match self.by_name.get(name) {
                None => problems.push(format!("unexpected tensor {name:?}")),
                Some(&t) => {
                    let spec = &self.tensors[t];
                    if spec.dtype != dtype || spec.shape != shape {
                        problems.push(format!(
                            "tensor {name:?} is {dtype}{shape:?}, the round expects {}{:?}",
                            spec.dtype, spec.shape
                        ));
                    }
                    index[t] = j;
                }
            };
        match source {
            Source::Payload { layout, .. } => {
                for (j, e) in layout.entries.iter().enumerate() {
                    visit(j, &e.name, e.dtype, &e.shape);
                }
            }
            Source::Tensors(views) => {
                for (j, v) in views.iter().enumerate() {
                    visit(j, v.name, v.dtype, v.shape);
                }
            }
        }
        for (t, &j) in index.iter().enumerate() {
            if j == usize::MAX {
                problems.push(format!("missing tensor {:?}", self.tensors[t].name));
            }
        }
        if problems.is_empty() {
            return Ok(index);
        }
        let more = problems.len().saturating_sub(MAX_LISTED);
        problems.truncate(MAX_LISTED);
        let mut reason = problems.join("; ");
        if more > 0 {
            reason.push_str(&format!(" (and {more} more)"));
        }
        Err(reason)
    }

    /// The base rules of [`Round::check`]: a delta payload or a difference must be against
    /// the round's base; without a base, models and differences do not mix.
    fn check_base(
        &self,
        source: &Source<'_>,
        kind: Kind,
        first_kind: Option<Kind>,
    ) -> std::result::Result<(), String> {
        let header_base = match source {
            Source::Payload { layout, .. } => layout.base,
            Source::Tensors(_) => None,
        };
        let want = self.base_id.as_ref();
        if let Some(got) = header_base {
            match want {
                None => {
                    return Err(format!(
                        "it is delta-encoded against base {}, and the round has no base \
                         (pass base=)",
                        hex32(&got)
                    ))
                }
                Some(w) if *w != got => {
                    return Err(format!(
                        "it is delta-encoded against base {}, the round's base is {}",
                        hex32(&got),
                        hex32(w)
                    ))
                }
                Some(_) => {}
            }
        }
        if let Kind::Difference(got) = kind {
            match (want, first_kind) {
                (Some(w), _) if *w != got => {
                    return Err(format!(
                        "it is a difference against base {}, the round's base is {}",
                        hex32(&got),
                        hex32(w)
                    ))
                }
                (None, Some(Kind::Difference(first))) if first != got => {
                    return Err(format!(
                        "it is a difference against base {}, earlier updates against {}",
                        hex32(&got),
                        hex32(&first)
                    ))
                }
                _ => {}
            }
        }
        if let (None, Some(first)) = (want, first_kind) {
            if first.is_difference() != kind.is_difference() {
                let what = |k: Kind| {
                    if k.is_difference() {
                        "a difference"
                    } else {
                        "a model"
                    }
                };
                return Err(format!(
                    "it is {} and earlier updates are {}: without a base they cannot be \
                     averaged together (pass base=)",
                    what(kind),
                    what(first)
                ));
            }
        }
        Ok(())
    }
}

/// The error `e`, as having happened in update `u`.
pub(crate) fn about_update(u: usize, e: Error) -> Error {
    e.in_update(u)
}

impl Source<'_> {
    /// Check that the alignment padding between stored tensors is zero, so that a
    /// verified aggregation covers every byte of the payload (tensor bytes are
    /// covered by their checksums as they are used).
    pub(super) fn check_padding(&self) -> Result<()> {
        match self {
            Source::Payload { buf, layout } => layout.check_padding(buf),
            Source::Tensors(_) => Ok(()),
        }
    }

    /// The update's tensor `j` when it can be read in place (raw in a payload, or in
    /// memory), with its expected checksum when it is stored in a payload.
    pub(super) fn in_place(&self, j: usize) -> Option<(&[u8], Option<&[u8; 32]>)> {
        match self {
            Source::Tensors(views) => Some((views[j].data, None)),
            Source::Payload { buf, layout } if layout.entries[j].is_stored_raw() => {
                Some((layout.stored(buf, j), Some(&layout.entries[j].hash)))
            }
            Source::Payload { .. } => None,
        }
    }

    /// The update's coded tensor `j` decoded one codec block at a time into `scratch`
    /// (one block long, reused), `f(first element, block bytes)` called on each block in
    /// order: `Ok(false)`, without calling `f`, when it is not read so (in place, sealed,
    /// or blocks that are not a whole number of `kernel_block` elements, which would
    /// change how the kernels group their sums): [`Self::values`] decodes it whole. Each
    /// block decodes to the same bytes as the whole tensor does there, so the caller's
    /// results are bit for bit those of a pass over [`Self::values`]. `verify` checks
    /// the stored bytes' checksum first; `base` as for [`Self::values`].
    pub(super) fn for_each_block(
        &self,
        j: usize,
        scratch: &mut Vec<u8>,
        base: Option<TensorView<'_>>,
        verify: bool,
        kernel_block: usize,
        mut f: impl FnMut(usize, &[u8]),
    ) -> Result<bool> {
        let Source::Payload { buf, layout } = self else {
            return Ok(false);
        };
        let e = &layout.entries[j];
        if e.is_stored_raw() || e.sealed {
            return Ok(false);
        }
        let size = e.dtype.itemsize();
        let coded = e
            .pipeline
            .open(e.dtype, &e.shape, e.nbytes, layout.stored(buf, j))
            .map_err(|err| err.in_tensor(&e.name))?;
        let block = coded.block_bytes();
        if block == 0 || block % (kernel_block * size) != 0 {
            return Ok(false);
        }
        let base = match base {
            _ if !e.pipeline.needs_base() => None,
            Some(b) if b.dtype == e.dtype && b.shape == e.shape.as_slice() => Some(b.data),
            _ => return Ok(false), // decode_into names what is wrong with it
        };
        if verify {
            layout.verify(buf, Some(&[j]))?;
        }
        try_grow(scratch, block.min(e.nbytes), "a decoded block")?;
        for b in 0..coded.block_count() {
            let range = b * block..b * block + coded.block_len(b);
            let out = &mut scratch[..range.len()];
            coded
                .decode_block(b, base.map(|x| &x[range.clone()]), out)
                .map_err(|err| err.in_block(b).in_tensor(&e.name))?;
            f(range.start / size, out);
        }
        Ok(true)
    }

    /// The little-endian bytes of the update's tensor `j`: the stored bytes themselves
    /// when raw, else decoded into `scratch` (grown as needed and reused). `verify`
    /// checks the stored bytes' checksum first.
    pub(super) fn values<'r>(
        &'r self,
        j: usize,
        scratch: &'r mut Vec<u8>,
        base: Option<TensorView<'_>>,
        verify: bool,
    ) -> Result<&'r [u8]> {
        match self {
            Source::Tensors(views) => Ok(views[j].data),
            Source::Payload { buf, layout } => {
                let e = &layout.entries[j];
                if e.is_stored_raw() {
                    if verify {
                        layout.verify(buf, Some(&[j]))?;
                    }
                    return Ok(layout.stored(buf, j));
                }
                try_grow(scratch, e.nbytes, "a decoded tensor")?;
                let out = &mut scratch[..e.nbytes];
                layout.decode_into(buf, j, out, base, verify)?;
                Ok(out)
            }
        }
    }
}
