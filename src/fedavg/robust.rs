//! The robust aggregators: the element-wise median (Flower's FedMedian) and trimmed
//! mean (FedTrimmedAvg) of the updates' contributions, unweighted, in float64.
//!
//! An element's statistic needs that element of every update at once, so the tensors
//! are walked in windows of [`WINDOW_BYTES`] of output, in parallel; each worker keeps,
//! per update, the one codec block it last decoded (about 1 MiB) and gathers the
//! window's values [`SUB`] elements at a time. Memory: per thread, one codec block per
//! coded update plus `SUB` values per update.

use rayon::prelude::*;

use super::kernels::{load, store};
use super::{about_update, base_of, Contribution, Method, Round};
use crate::codec::Coded;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::TensorView;
use crate::memory::try_grow;

/// Bytes of output per parallel task (the writers' codec block size).
const WINDOW_BYTES: usize = 1 << 20;
/// Elements gathered from every update at a time.
const SUB: usize = 1024;

/// Where update `u`'s tensor comes from: bytes read in place, or a coded tensor.
enum Reader<'a> {
    InPlace(&'a [u8]),
    Coded(Coded<'a>),
}

/// One worker's cache: per update, which block it holds (round tensor, block index) and
/// the block's decoded bytes.
struct Cache {
    blocks: Vec<((usize, usize), Vec<u8>)>,
    gather: Vec<f64>,
    values: Vec<f64>,
    base: Vec<f64>,
}

/// Combine surveyed, accepted `updates` (scaled by `scales`) into `out` by `method`.
pub(super) fn combine(
    round: &Round,
    base: Option<&[&[u8]]>,
    updates: &[&Contribution<'_>],
    scales: &[f64],
    method: Method,
    out: Vec<&mut [u8]>,
) -> Result<()> {
    let n = updates.len();
    let cut = match method {
        Method::TrimmedMean(beta) => (beta * n as f64).floor() as usize,
        _ => 0,
    };
    if n == 0 || n <= 2 * cut {
        return Err(Error::input(format!(
            "nothing to aggregate: {n} updates accepted, {cut} would be cut from each end"
        )));
    }
    // Every update's tensors, opened once (a coded tensor's framing is read here).
    let readers: Vec<Vec<Reader<'_>>> = (0..round.tensors.len())
        .map(|t| {
            updates
                .iter()
                .map(|c| open(c, t).map_err(|e| about_update(c.id, e)))
                .collect::<Result<_>>()
        })
        .collect::<Result<_>>()?;
    let mut tasks = Vec::new();
    for (t, o) in out.into_iter().enumerate() {
        let size = round.tensors[t].dtype.itemsize();
        let window = WINDOW_BYTES / size * size;
        for (w, chunk) in o.chunks_mut(window).enumerate() {
            tasks.push((t, w * window / size, chunk));
        }
    }
    let fresh = || Cache {
        blocks: (0..n).map(|_| ((usize::MAX, 0), Vec::new())).collect(),
        gather: vec![0.0; n * SUB],
        values: vec![0.0; SUB],
        base: vec![0.0; SUB],
    };
    tasks
        .into_par_iter()
        .map_init(fresh, |cache, (t, lo, out)| {
            let spec = &round.tensors[t];
            let size = spec.dtype.itemsize();
            let b = base_of(round, base, t);
            let hi = lo + out.len() / size;
            let mut a = lo;
            while a < hi {
                let e = SUB.min(hi - a);
                for (u, c) in updates.iter().enumerate() {
                    let rel = b.filter(|_| !c.kind.is_difference());
                    fetch(&readers[t][u], spec.dtype, rel, (t, a, e), u, cache)
                        .map_err(|err| about_update(c.id, err))?;
                    for (i, v) in cache.values[..e].iter().enumerate() {
                        cache.gather[i * n + u] = v * scales[u];
                    }
                }
                let mut r = [0f64; SUB];
                for (i, r) in r[..e].iter_mut().enumerate() {
                    let col = &mut cache.gather[i * n..(i + 1) * n];
                    *r = statistic(col, method, cut);
                }
                if let Some(b) = b {
                    load(
                        spec.dtype,
                        &b.data[a * size..(a + e) * size],
                        &mut cache.base[..e],
                    );
                    for (r, b) in r[..e].iter_mut().zip(&cache.base[..e]) {
                        *r += b;
                    }
                }
                let at = (a - lo) * size;
                store::<f64>(spec.dtype, &r[..e], &mut out[at..at + e * size]);
                a += e;
            }
            Ok(())
        })
        .collect()
}

/// The median or trimmed mean of `col` (reordered in place).
fn statistic(col: &mut [f64], method: Method, cut: usize) -> f64 {
    let n = col.len();
    let cmp = |x: &f64, y: &f64| x.total_cmp(y);
    match method {
        Method::Median => {
            let (left, &mut mid, _) = col.select_nth_unstable_by(n / 2, cmp);
            if n % 2 == 1 {
                mid
            } else {
                let below = left.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                below / 2.0 + mid / 2.0
            }
        }
        _ => {
            if cut > 0 {
                col.select_nth_unstable_by(cut, cmp);
                col[cut..].select_nth_unstable_by(n - 2 * cut - 1, cmp);
            }
            let kept = &col[cut..n - cut];
            let count = kept.len() as f64;
            let sum: f64 = kept.iter().sum();
            if sum.is_finite() {
                sum / count
            } else {
                kept.iter().map(|v| v / count).sum()
            }
        }
    }
}

/// How to read update `c`'s round tensor `t`.
fn open<'a>(c: &'a Contribution<'a>, t: usize) -> Result<Reader<'a>> {
    let j = c.index[t];
    if let Some((bytes, _)) = c.source.in_place(j) {
        return Ok(Reader::InPlace(bytes));
    }
    let super::Source::Payload { buf, layout } = &c.source else {
        unreachable!("tensors in memory are read in place")
    };
    let e = &layout.entries[j];
    let coded = e
        .pipeline
        .open(e.dtype, &e.shape, e.nbytes, layout.stored(buf, j))
        .map_err(|err| err.in_tensor(&e.name))?;
    Ok(Reader::Coded(coded))
}

/// Elements `a..a + e` of update `u`'s round tensor `t`, as `d` (relative to `base` when
/// given), into `cache.values`; coded tensors decode the blocks they need into the
/// update's slot.
fn fetch(
    reader: &Reader<'_>,
    dtype: DType,
    base: Option<TensorView<'_>>,
    (t, a, e): (usize, usize, usize),
    u: usize,
    cache: &mut Cache,
) -> Result<()> {
    let size = dtype.itemsize();
    match reader {
        Reader::InPlace(bytes) => load(
            dtype,
            &bytes[a * size..(a + e) * size],
            &mut cache.values[..e],
        ),
        Reader::Coded(coded) => {
            let per_block = coded.block_bytes() / size;
            let mut done = 0;
            while done < e {
                let at = a + done;
                let blk = at / per_block;
                let (held, bytes) = &mut cache.blocks[u];
                if *held != (t, blk) {
                    let start = blk * coded.block_bytes();
                    let len = coded.block_len(blk);
                    try_grow(bytes, len, "a decoded block")?;
                    let b = base.map(|b| &b.data[start..start + len]);
                    *held = (usize::MAX, 0);
                    coded.decode_block(blk, b, &mut bytes[..len])?;
                    *held = (t, blk);
                }
                let from = at - blk * per_block;
                let take = (e - done).min(per_block - from);
                load(
                    dtype,
                    &bytes[from * size..(from + take) * size],
                    &mut cache.values[done..done + take],
                );
                done += take;
            }
        }
    }
    if let Some(b) = base {
        load(
            dtype,
            &b.data[a * size..(a + e) * size],
            &mut cache.base[..e],
        );
        for (v, b) in cache.values[..e].iter_mut().zip(&cache.base[..e]) {
            *v -= b;
        }
    }
    Ok(())
}
