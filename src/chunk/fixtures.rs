//! Test data shared by the chunking tests: a deterministic generator, payloads cut into
//! chunks, forged chunks and a small container.

use super::framing::{CHUNK_HEADER_LEN, CRC_AT};
use super::split::ChunkPlan;
use crate::trust::{Key, Signing};

/// A small deterministic generator, so the tests need no extra crate.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// The chunks of `payload`, at most `max_bytes` each, under the payload id `[id; 16]`.
pub fn chunks_of(payload: &[u8], max_bytes: u64, id: u8) -> Vec<Vec<u8>> {
    ChunkPlan::new(payload, max_bytes, Some([id; 16]), None)
        .unwrap()
        .to_vecs(payload)
}

/// [`chunks_of`], authenticated with the user key `[key; 32]`.
pub fn tagged_chunks_of(payload: &[u8], max_bytes: u64, id: u8, key: u8) -> Vec<Vec<u8>> {
    ChunkPlan::new(payload, max_bytes, Some([id; 16]), Some(&[key; 32]))
        .unwrap()
        .to_vecs(payload)
}

/// Recompute a chunk's CRC after tampering, as a forger would (a tag, if flagged, is
/// left as it was: the forger has no key).
pub fn reseal(chunk: &mut [u8]) {
    let tag = if chunk[6] & 1 != 0 { 16 } else { 0 };
    let end = chunk.len() - tag;
    let mut h = crc32fast::Hasher::new();
    h.update(&chunk[..CRC_AT]);
    h.update(&chunk[CHUNK_HEADER_LEN..end]);
    let crc = h.finalize().to_le_bytes();
    chunk[CRC_AT..CHUNK_HEADER_LEN].copy_from_slice(&crc);
}

/// Damaged copies of the chunk `c` (a middle chunk of a payload of several), each with
/// whether its refusal is an integrity error and a word its message holds.
pub fn bad_chunks(c: &[u8]) -> Vec<(Vec<u8>, bool, &'static str)> {
    let with = |f: &dyn Fn(&mut Vec<u8>), seal: bool| {
        let mut bad = c.to_vec();
        f(&mut bad);
        if seal {
            reseal(&mut bad);
        }
        bad
    };
    vec![
        (b"hello".to_vec(), false, "magic"),
        (c[..50].to_vec(), true, "truncated"),
        (c[..c.len() - 1].to_vec(), true, "announces"),
        (with(&|b| b[4] = 2, false), false, "version"),
        (with(&|b| b[5] = 9, false), false, "kind"),
        (with(&|b| b[7] = 1, false), false, "reserved"),
        (
            with(&|b| b[CHUNK_HEADER_LEN + 3] ^= 1, false),
            true,
            "checksum mismatch",
        ),
        (
            with(&|b| b[24..28].copy_from_slice(&9u32.to_le_bytes()), true),
            false,
            "not below the chunk count",
        ),
        (
            with(&|b| b[40..48].copy_from_slice(&5u64.to_le_bytes()), true),
            false,
            "offset",
        ),
        (
            with(
                &|b| b[32..40].copy_from_slice(&u64::MAX.to_le_bytes()),
                true,
            ),
            false,
            "do not make",
        ),
    ]
}

/// A container of five float32 tensors (the third zstd-coded) and the tensors' bytes.
pub fn container(seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    with_prepared(seed, |prepared| {
        let mut out = vec![0u8; prepared.total_len()];
        prepared.write_into(&mut out).unwrap();
        out
    })
}

/// [`container`]'s tensors in a payload authenticated with the user key `key` and/or
/// signed with the signing key `signer` (fixed creation time and nonce).
pub fn authenticated_container(seed: u64, key: Option<&Key>, signer: Option<&Key>) -> Vec<u8> {
    let mut signing = Signing::new(key, signer);
    signing.created = Some(1_700_000_000_000);
    signing.nonce = Some([7; 16]);
    let opts = crate::EncodeOptions {
        auth: Some(&signing),
        ..Default::default()
    };
    with_prepared_as(seed, &opts, |prepared| {
        let mut out = vec![0u8; prepared.total_len()];
        prepared.write_into(&mut out).unwrap();
        out
    })
    .0
}

/// What `f` makes of [`container`]'s payload before it is written, and the tensors' bytes.
pub fn with_prepared<R>(seed: u64, f: impl FnOnce(crate::Prepared<'_>) -> R) -> (R, Vec<Vec<u8>>) {
    with_prepared_as(seed, &Default::default(), f)
}

/// [`with_prepared`] with these encoding options.
pub fn with_prepared_as<R>(
    seed: u64,
    opts: &crate::EncodeOptions<'_>,
    f: impl FnOnce(crate::Prepared<'_>) -> R,
) -> (R, Vec<Vec<u8>>) {
    let mut rng = Rng(seed);
    let datas: Vec<Vec<u8>> = (0..5).map(|i| rng.bytes(4 * (100 + 37 * i))).collect();
    let shapes: Vec<Vec<u64>> = (0..5).map(|i| vec![100 + 37 * i as u64]).collect();
    let names: Vec<String> = (0..5).map(|i| format!("layer{i}.weight")).collect();
    let inputs: Vec<crate::TensorInput<'_>> = (0..5)
        .map(|i| crate::TensorInput {
            tensor: crate::TensorView {
                name: &names[i],
                dtype: crate::DType::F32,
                shape: &shapes[i],
                data: &datas[i],
            },
            codec: if i == 2 { "zstd" } else { "raw" },
            base: None,
        })
        .collect();
    let made = f(crate::prepare(&inputs, opts).unwrap());
    drop(inputs);
    (made, datas)
}
