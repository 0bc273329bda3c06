//! Ids and digests as the header writes them: lowercase hex of 32-byte digests, and the
//! id of a set of tensors that a delta's header records (FORMAT.md, "Base id").

use rayon::prelude::*;

use super::TensorView;
use crate::memory::hash;

/// Parse a 64-character lowercase hex digest.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    // Digit values by byte, 0xFF for anything that is not a lowercase hex digit; the
    // loop has no data-dependent branch (hashes are random, so branches mispredict).
    const VALUE: [u8; 256] = {
        let mut t = [0xFFu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let b: &[u8; 64] = s.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (VALUE[pair[0] as usize], VALUE[pair[1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    (bad & 0xF0 == 0).then_some(out)
}

/// Lowercase hex of a digest.
pub fn hex32(h: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for &b in h {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Id of a set of tensors, independent of how they are encoded: blake3 over each
/// tensor's name, dtype, shape and the blake3 of its bytes (see FORMAT.md, "Base id").
pub fn tensors_id(tensors: &[TensorView<'_>]) -> [u8; 32] {
    let hashes: Vec<[u8; 32]> = tensors.par_iter().map(|t| hash(t.data)).collect();
    let mut h = blake3::Hasher::new();
    h.update(b"tensorwire-tensors-id-v1");
    h.update(&(tensors.len() as u64).to_le_bytes());
    for (t, th) in tensors.iter().zip(&hashes) {
        h.update(&(t.name.len() as u64).to_le_bytes());
        h.update(t.name.as_bytes());
        h.update(&(t.dtype.name().len() as u64).to_le_bytes());
        h.update(t.dtype.name().as_bytes());
        h.update(&(t.shape.len() as u64).to_le_bytes());
        for d in t.shape {
            h.update(&d.to_le_bytes());
        }
        h.update(th);
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn floats(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect()
    }

    #[test]
    fn hex_round_trip() {
        let h = *blake3::hash(b"abc").as_bytes();
        assert_eq!(parse_hex32(&hex32(&h)), Some(h));
        assert_eq!(parse_hex32(&hex32(&h).to_uppercase()), None);
        assert_eq!(parse_hex32("00"), None);
    }

    #[test]
    fn tensors_id_depends_on_every_field() {
        let a = floats(4);
        let id = |name: &str, dtype: DType, shape: &[u64], data: &[u8]| {
            tensors_id(&[TensorView {
                name,
                dtype,
                shape,
                data,
            }])
        };
        let base = id("a", DType::F32, &[4], &a);
        assert_eq!(base, id("a", DType::F32, &[4], &a));
        assert_ne!(base, id("b", DType::F32, &[4], &a));
        assert_ne!(base, id("a", DType::I32, &[4], &a));
        assert_ne!(base, id("a", DType::F32, &[2, 2], &a));
        assert_ne!(base, id("a", DType::F32, &[4], &floats(5)[4..]));
    }
}
