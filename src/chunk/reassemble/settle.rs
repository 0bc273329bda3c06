//! A finished payload settled: verified, and when different bodies were received for
//! some of its chunks, the one combination of them that verifies picked.

use super::{Key, PayloadBuffer};
use crate::chunk::verify::{verify_payload_with, PayloadChecks, Verified};
use crate::error::{Error, Result};

/// Verify the finished `buf` with `checks`; when alternative bodies are held, find the
/// combination that verifies (at most `2^MAX_ALTERNATES` tries, each a full
/// verification) and leave it in `buf`. A combination that can only be checked
/// [`Verified::WithoutKey`] does not count: without the key nothing tells a forged body
/// from the genuine one.
pub(super) fn settle<B: PayloadBuffer>(
    buf: &mut B,
    key: &Key,
    alternates: &[(u32, Vec<u8>)],
    full: bool,
    checks: &PayloadChecks,
) -> Result<()> {
    if alternates.is_empty() {
        return verify_payload_with(buf.bytes(), key.kind, &key.digest, full, checks).map(|_| ());
    }
    // Each index with alternatives has choices: what the buffer holds, then each
    // alternative; count through every combination.
    let mut indices: Vec<u32> = alternates.iter().map(|(i, _)| *i).collect();
    indices.sort_unstable();
    indices.dedup();
    let piece = key.geometry.piece as usize;
    let span = |i: u32| {
        let at = i as usize * piece;
        at..(at + piece).min(key.geometry.total as usize)
    };
    let first: Vec<Vec<u8>> = indices
        .iter()
        .map(|&i| buf.bytes()[span(i)].to_vec())
        .collect();
    let choices: Vec<Vec<&[u8]>> = indices
        .iter()
        .zip(&first)
        .map(|(&i, held)| {
            std::iter::once(held.as_slice())
                .chain(
                    alternates
                        .iter()
                        .filter(|(j, _)| *j == i)
                        .map(|(_, b)| b.as_slice()),
                )
                .collect()
        })
        .collect();
    let mut pick = vec![0usize; indices.len()];
    loop {
        for ((&i, c), &k) in indices.iter().zip(&choices).zip(&pick) {
            buf.bytes_mut()[span(i)].copy_from_slice(c[k]);
        }
        let e = match verify_payload_with(buf.bytes(), key.kind, &key.digest, true, checks) {
            Ok(Verified::Fully) => return Ok(()),
            Ok(Verified::WithoutKey) => Error::authentication(
                "different bodies were received for some of its chunks, and it is \
                 authenticated with a key the reassembler was not given (pass key= or \
                 keys=), so nothing tells the genuine ones from forgeries",
            ),
            Err(e) => e,
        };
        // Next combination (mixed radix); the last one's error when none is left.
        let mut d = 0;
        loop {
            if d == pick.len() {
                return Err(e);
            }
            pick[d] += 1;
            if pick[d] < choices[d].len() {
                break;
            }
            pick[d] = 0;
            d += 1;
        }
    }
}
