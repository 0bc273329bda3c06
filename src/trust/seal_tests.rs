//! Sealed streams: round trips, every way of moving or cutting blocks refused, the
//! lengths, the wire layout pinned, and a throughput figure (ignored by default).

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305};

use super::*;
use crate::error::Kind;

const KEY: Key = [7u8; 32];
const NONCE: PayloadNonce = [9u8; 16];
const SB: usize = BLOCK + TAG;

/// `n` bytes that differ from block to block (so swaps and moves are visible).
fn data(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new()
        .update(&(n as u64).to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

fn seal(key: &Key, payload: &PayloadNonce, tensor: u32, plain: &[u8]) -> Vec<u8> {
    let mut out = vec![0xA5u8; sealed_len(plain.len()).unwrap()];
    seal_into(key, payload, tensor, plain, &mut out).unwrap();
    out
}

fn open(key: &Key, payload: &PayloadNonce, tensor: u32, sealed: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0x5Au8; plain_len(sealed.len())?];
    open_into(key, payload, tensor, sealed, &mut out)?;
    Ok(out)
}

/// Opening `sealed` as tensor 0 of NONCE under KEY is refused as inauthentic, naming
/// `block`, and leaves no plaintext in the output.
fn refused_at(sealed: &[u8], block: usize) {
    let mut out = vec![0x5Au8; plain_len(sealed.len()).unwrap()];
    let e = open_into(&KEY, &NONCE, 0, sealed, &mut out).unwrap_err();
    assert!(
        out.iter().all(|&b| b == 0),
        "plaintext left after a refusal"
    );
    assert_eq!(e.kind(), Kind::Authentication, "{e}");
    assert_eq!(e.block(), Some(block), "{e}");
    assert!(e.to_string().contains("does not authenticate"), "{e}");
}

#[test]
fn every_size_round_trips() {
    for n in [0, 1, 17, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5] {
        let plain = data(n);
        let sealed = seal(&KEY, &NONCE, 3, &plain);
        assert_eq!(sealed.len(), n + n.div_ceil(BLOCK) * TAG, "{n}");
        assert_eq!(plain_len(sealed.len()).unwrap(), n);
        if n >= 16 {
            assert!(sealed.windows(16).all(|w| w != &plain[..16]), "{n}");
        }
        assert_eq!(open(&KEY, &NONCE, 3, &sealed).unwrap(), plain, "{n}");
    }
}

#[test]
fn a_flipped_bit_of_ciphertext_or_tag_is_refused() {
    let sealed = seal(&KEY, &NONCE, 0, &data(2 * BLOCK + 5));
    // Ciphertext of blocks 0 and 1, tag of block 1, the short last block's data and tag.
    for (at, block, bit) in [
        (0, 0, 0),
        (SB + 12345, 1, 7),
        (SB + BLOCK - 3, 1, 3),
        (2 * SB - 1, 1, 0),
        (2 * SB, 2, 7),
        (2 * SB + 5, 2, 1),
        (sealed.len() - 1, 2, 7),
    ] {
        let mut bad = sealed.clone();
        bad[at] ^= 1 << bit;
        refused_at(&bad, block);
    }
}

#[test]
fn swapped_dropped_or_truncated_blocks_are_refused() {
    let sealed = seal(&KEY, &NONCE, 0, &data(3 * BLOCK + 5));
    let block = |i: usize| &sealed[i * SB..((i + 1) * SB).min(sealed.len())];

    let swapped = [block(1), block(0), block(2), block(3)].concat();
    refused_at(&swapped, 0);
    let swapped_late = [block(0), block(2), block(1), block(3)].concat();
    refused_at(&swapped_late, 1);

    // Dropping block 1 leaves a well-formed length: only the AD can tell.
    let dropped = [block(0), block(2), block(3)].concat();
    assert!(plain_len(dropped.len()).is_ok());
    refused_at(&dropped, 0);

    // Cut at a block boundary: every remaining block is intact, but the count differs.
    for keep in 1..=3 {
        let cut = &sealed[..keep * SB];
        assert_eq!(plain_len(cut.len()).unwrap(), keep * BLOCK);
        refused_at(cut, 0);
    }
    // The last block alone, or the last block repeated, is refused too.
    refused_at(block(3), 0);
    let repeated = [block(0), block(1), block(2), block(2)].concat();
    assert!(open(&KEY, &NONCE, 0, &repeated).is_err());
}

#[test]
fn blocks_from_another_tensor_payload_or_key_are_refused() {
    let plain = data(2 * BLOCK + 5);
    let ours = seal(&KEY, &NONCE, 0, &plain);
    let mut other_nonce = NONCE;
    other_nonce[15] ^= 1;
    let mut other_key = KEY;
    other_key[0] ^= 1;
    for theirs in [
        seal(&KEY, &NONCE, 1, &plain),
        seal(&KEY, &other_nonce, 0, &plain),
        seal(&other_key, &NONCE, 0, &plain),
    ] {
        assert_ne!(theirs, ours);
        // Block 1 spliced in from the other stream (same plaintext, same position).
        let mut spliced = ours.clone();
        spliced[SB..2 * SB].copy_from_slice(&theirs[SB..2 * SB]);
        refused_at(&spliced, 1);
        refused_at(&theirs, 0);
    }
    // Our own stream, opened as another tensor, payload or key.
    assert!(open(&KEY, &NONCE, 1, &ours).is_err());
    assert!(open(&KEY, &other_nonce, 0, &ours).is_err());
    let e = open(&other_key, &NONCE, 0, &ours).unwrap_err();
    assert_eq!((e.kind(), e.block()), (Kind::Authentication, Some(0)));
    assert_eq!(open(&KEY, &NONCE, 0, &ours).unwrap(), plain);
}

#[test]
fn nonces_differ_across_blocks_tensors_payloads_and_keys() {
    let mut other_nonce = NONCE;
    other_nonce[0] ^= 0x80;
    let mut seen = std::collections::HashSet::new();
    for key in [KEY, [8u8; 32]] {
        for payload in [NONCE, other_nonce] {
            for tensor in [0, 1, 2, u32::MAX] {
                for block in [0, 1, 2, u32::MAX] {
                    assert!(seen.insert(block_nonce(&key, &payload, tensor, block)));
                }
            }
        }
    }
    // Equal plaintext blocks never share a keystream: their ciphertexts differ.
    let zeros = vec![0u8; 2 * BLOCK];
    let sealed = seal(&KEY, &NONCE, 0, &zeros);
    assert_ne!(sealed[..BLOCK], sealed[SB..SB + BLOCK]);
    assert_ne!(sealed[..SB], seal(&KEY, &NONCE, 1, &zeros)[..SB]);
}

/// The spec's layout, spelled out byte by byte with plain BLAKE3 and the AEAD alone,
/// agrees with the stream on every block, on one thread (one block) and several.
#[test]
fn the_stream_is_the_layout_of_the_spec() {
    let aead = XChaCha20Poly1305::new(&KEY.into());
    for (tensor, n) in [(0u32, 1000), (5, 3 * BLOCK + 5)] {
        let plain = data(n);
        let sealed = seal(&KEY, &NONCE, tensor, &plain);
        let count = n.div_ceil(BLOCK) as u32;
        for (i, block) in plain.chunks(BLOCK).enumerate() {
            let i32le = (i as u32).to_le_bytes();
            let t32le = tensor.to_le_bytes();
            let nonce_input = [&b"nonce"[..], &NONCE, &t32le, &i32le].concat();
            let hash = blake3::keyed_hash(&KEY, &nonce_input);
            let nonce = &hash.as_bytes()[..24];
            let ad = [&NONCE[..], &t32le, &i32le, &count.to_le_bytes()].concat();
            let mut body = vec![0u8; block.len()];
            let tag = aead
                .encrypt_inout_detached(
                    nonce.try_into().unwrap(),
                    &ad,
                    InOutBuf::new(block, &mut body).unwrap(),
                )
                .unwrap();
            let at = i * SB;
            assert_eq!(sealed[at..at + block.len()], body[..], "block {i}");
            assert_eq!(sealed[at + block.len()..at + block.len() + TAG], tag[..]);
        }
    }
}

/// The wire format cannot drift: one short stream and one of two blocks, pinned. The
/// hex was computed independently of this crate, with libsodium's
/// `crypto_aead_xchacha20poly1305_ietf_encrypt` (PyNaCl) and the `blake3` package.
#[test]
fn the_sealed_bytes_are_pinned() {
    let key: Key = std::array::from_fn(|i| i as u8);
    let payload: PayloadNonce = std::array::from_fn(|i| 0xA0 + i as u8);
    let short = seal(&key, &payload, 7, b"tensorwire sealed block");
    assert_eq!(
        hex(&short),
        "56d3b5ce3ca30c77fd836c260fed79f052e294d504e919186f928556f40acb0b157854dab4128a"
    );
    let long = seal(&key, &payload, 7, &vec![0x61u8; BLOCK + 3]);
    // The first block's tag, then the second block (3 bytes and its tag).
    assert_eq!(
        hex(&long[BLOCK..SB + 3 + TAG]),
        "45bf88ed8f121d6896b81d7c2d856c82bfda8f904656009fbc0a9cd25525a6ae1348e1"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_lengths_are_inverses_and_refuse_what_no_sealing_makes() {
    for n in [
        0,
        1,
        2,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
        5 * BLOCK,
        5 * BLOCK + 7,
    ] {
        assert_eq!(plain_len(sealed_len(n).unwrap()).unwrap(), n, "{n}");
    }
    // Around each block boundary, a sealed length is accepted exactly when some
    // plaintext length seals to it (every plaintext length near there, tried).
    for k in 0..4usize {
        let made: std::collections::HashSet<usize> = ((k * BLOCK).saturating_sub(200)
            ..k * BLOCK + 200)
            .filter_map(sealed_len)
            .collect();
        for s in (k * SB).saturating_sub(40)..k * SB + 40 {
            match plain_len(s) {
                Ok(n) => assert_eq!(sealed_len(n), Some(s), "{s}"),
                Err(e) => assert_eq!(e.kind(), Kind::Format, "{e}"),
            }
            assert_eq!(plain_len(s).is_ok(), made.contains(&s), "{s}");
        }
    }
    for bad in [1, TAG, SB + 1, SB + TAG, 3 * SB + TAG] {
        assert!(plain_len(bad).is_err(), "{bad}");
    }
    for good in [0, TAG + 1, SB, SB + TAG + 1] {
        assert!(plain_len(good).is_ok(), "{good}");
    }
    assert_eq!(sealed_len(usize::MAX), None);
    assert_eq!(sealed_len(usize::MAX - 15), None);
    #[cfg(target_pointer_width = "64")]
    {
        let most = u32::MAX as usize * BLOCK;
        assert_eq!(sealed_len(most + 1), None);
        assert_eq!(sealed_len(most), Some(u32::MAX as usize * SB));
        assert!(plain_len((u32::MAX as usize + 1) * SB).is_err());
        assert_eq!(
            plain_len(u32::MAX as usize * SB).unwrap(),
            u32::MAX as usize * BLOCK
        );
    }
}

#[test]
fn output_lengths_are_checked_before_anything_is_written() {
    let plain = data(BLOCK + 1);
    let sealed = seal(&KEY, &NONCE, 0, &plain);
    for len in [0, sealed.len() - 1, sealed.len() + 1] {
        let mut out = vec![0xEEu8; len];
        let e = seal_into(&KEY, &NONCE, 0, &plain, &mut out).unwrap_err();
        assert_eq!(e.kind(), Kind::Input, "{e}");
        assert!(out.iter().all(|&b| b == 0xEE));
    }
    for len in [0, plain.len() - 1, plain.len() + 1] {
        let mut out = vec![0xEEu8; len];
        let e = open_into(&KEY, &NONCE, 0, &sealed, &mut out).unwrap_err();
        assert_eq!(e.kind(), Kind::Input, "{e}");
        assert!(out.iter().all(|&b| b == 0xEE));
    }
    let mut out = vec![0xEEu8; 4];
    let e = open_into(&KEY, &NONCE, 0, &sealed[..TAG], &mut out).unwrap_err();
    assert_eq!(e.kind(), Kind::Format, "{e}");
    assert!(out.iter().all(|&b| b == 0xEE));
}

/// CPU time of the calling thread, in seconds (wall time elsewhere than Linux).
fn thread_seconds() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec the call writes into.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        (rc == 0).then_some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Seal and open throughput on 64 MiB against memcpy in the same run, with every thread
/// and on one (whose CPU time gives the figure per core even on a busy machine):
/// `cargo test --release --lib seal_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture, ideally --release"]
fn seal_throughput() {
    use std::time::Instant;
    const N: usize = 64 << 20;
    let plain = data(N);
    let mut sealed = vec![0u8; sealed_len(N).unwrap()];
    let mut back = vec![0u8; N];
    let mut copy = vec![0u8; N];
    // Best of five: (wall seconds, CPU seconds of this thread).
    let best = |f: &mut dyn FnMut()| {
        (0..5)
            .map(|_| {
                let (t, c) = (Instant::now(), thread_seconds());
                f();
                let cpu = c.zip(thread_seconds()).map(|(a, b)| b - a);
                (t.elapsed().as_secs_f64(), cpu.unwrap_or(f64::NAN))
            })
            .fold((f64::INFINITY, f64::INFINITY), |a, b| {
                (a.0.min(b.0), a.1.min(b.1))
            })
    };
    let gbs = |s: f64| N as f64 / s / 1e9;
    for threads in [rayon::current_num_threads(), 1] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let m = best(&mut || copy.copy_from_slice(std::hint::black_box(&plain)));
            let s = best(&mut || seal_into(&KEY, &NONCE, 0, &plain, &mut sealed).unwrap());
            let o = best(&mut || open_into(&KEY, &NONCE, 0, &sealed, &mut back).unwrap());
            println!(
                "64 MiB, {threads} threads, wall: memcpy {:.2} GB/s, seal {:.2} GB/s \
                 ({:.1}x memcpy's time), open {:.2} GB/s ({:.1}x)",
                gbs(m.0),
                gbs(s.0),
                s.0 / m.0,
                gbs(o.0),
                o.0 / m.0
            );
            if threads == 1 {
                println!(
                    "64 MiB, one core, CPU time: memcpy {:.2} GB/s, seal {:.2} GB/s \
                     ({:.1}x), open {:.2} GB/s ({:.1}x)",
                    gbs(m.1),
                    gbs(s.1),
                    s.1 / m.1,
                    gbs(o.1),
                    o.1 / m.1
                );
            }
        });
    }
    assert_eq!(back, plain);
}
