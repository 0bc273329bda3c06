//! Encrypted payloads (FORMAT.md section 10, "Encryption"): round trips through every
//! writer, no plaintext left in the bytes, and every refusal of the reader.

use super::auth::tests::{edit_header, keyed, refused, reseal_keyed, reseal_plain, signing};
use crate::dtype::DType;
use crate::error::Kind;
use crate::format::{parse_with, prepare, EncodeOptions, Encrypt, Layout, TensorInput, TensorView};
use crate::trust::Verifier;

const KEY: [u8; 32] = [7; 32];
const OTHER: [u8; 32] = [8; 32];
const SK: [u8; 32] = [21; 32];

/// Distinct, non-repeating float32 bytes: every 16-byte run is unique to its place.
fn floats(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .flat_map(|i| (seed as f32 * 1e6 + i as f32 * 0.5 + 0.25).to_le_bytes())
        .collect()
}

/// A raw tensor (several blocks when large), a coded one, a bool one and an empty one.
struct Inputs {
    shape: [u64; 2],
    big: Vec<u8>,
    coded: Vec<u8>,
    flags: Vec<u8>,
}

impl Inputs {
    /// With a raw tensor of `rows` rows of 1,000 floats.
    fn new(rows: u64) -> Inputs {
        Inputs {
            shape: [rows, 1000],
            big: floats(rows as usize * 1000, 1),
            coded: floats(5_000, 2),
            flags: (0..333).map(|i| (i % 3 == 0) as u8).collect(),
        }
    }

    fn tensors(&self) -> Vec<TensorInput<'_>> {
        let t = |name, dtype, shape, data, codec| TensorInput {
            tensor: TensorView {
                name,
                dtype,
                shape,
                data,
            },
            codec,
            base: None,
        };
        vec![
            t("layer.weight", DType::F32, &self.shape, &self.big, "raw"),
            t(
                "layer.bias",
                DType::F32,
                &[5000],
                &self.coded,
                "shuffle+zstd",
            ),
            t("mask", DType::Bool, &[333], &self.flags, "raw"),
            t("empty", DType::F32, &[0, 4], &[], "raw"),
        ]
    }

    fn plain(&self, i: usize) -> &[u8] {
        [&self.big[..], &self.coded, &self.flags, &[]][i]
    }
}

fn options<'a>(encrypt: Encrypt, s: &'a crate::trust::Signing) -> EncodeOptions<'a> {
    EncodeOptions {
        metadata: Some("{\"secret_metadata\":1}"),
        structure: None,
        base_id: None,
        auth: Some(s),
        encrypt,
    }
}

fn encode(inputs: &Inputs, encrypt: Encrypt, sk: Option<&[u8; 32]>) -> Vec<u8> {
    let s = signing(Some(&KEY), sk);
    let p = prepare(&inputs.tensors(), &options(encrypt, &s)).unwrap();
    let mut out = vec![0xAA; p.total_len()];
    p.write_into(&mut out).unwrap();
    out
}

fn decode_all(blob: &[u8], layout: &Layout, verify: bool) -> crate::error::Result<Vec<Vec<u8>>> {
    if verify {
        layout.verify(blob, None)?;
    }
    (0..layout.entries.len())
        .map(|i| {
            let mut out = vec![0u8; layout.entries[i].nbytes];
            layout.decode_into(blob, i, &mut out, None, verify)?;
            Ok(out)
        })
        .collect()
}

fn check_round_trip(blob: &[u8], inputs: &Inputs, encrypt: Encrypt) {
    let layout = parse_with(blob, &keyed(&[&KEY])).unwrap();
    assert_eq!(layout.encrypted(), encrypt);
    assert!(layout
        .entries
        .iter()
        .all(|e| e.sealed && !e.is_stored_raw()));
    let names: Vec<&str> = layout.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["layer.weight", "layer.bias", "mask", "empty"]);
    assert_eq!(layout.metadata.as_deref(), Some("{\"secret_metadata\":1}"));
    for verify in [true, false] {
        let got = decode_all(blob, &layout, verify).unwrap();
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g, inputs.plain(i), "tensor {i}, verify={verify}");
        }
    }
}

#[test]
fn encrypted_payloads_round_trip_through_every_writer() {
    for (rows, encrypt) in [
        (3, Encrypt::Tensors),
        (3, Encrypt::All),
        (600, Encrypt::Tensors),
        (600, Encrypt::All),
    ] {
        let inputs = Inputs::new(rows);
        for sk in [None, Some(&SK)] {
            let blob = encode(&inputs, encrypt, sk);
            check_round_trip(&blob, &inputs, encrypt);

            // A file: byte for byte what write_into made.
            let s = signing(Some(&KEY), sk);
            let p = prepare(&inputs.tensors(), &options(encrypt, &s)).unwrap();
            let mut file = std::io::Cursor::new(Vec::new());
            p.write_to(&mut file).unwrap();
            assert!(file.into_inner() == blob, "write_to, {encrypt:?}");
        }
    }
}

/// Whether any 16-byte run of `needle` occurs in `hay` (sampled every 16 bytes of the
/// needle, which finds any aligned or unaligned copy of 32 bytes or more).
fn holds_a_run_of(hay: &[u8], needle: &[u8]) -> bool {
    use std::collections::HashSet;
    let runs: HashSet<&[u8]> = needle.chunks_exact(16).collect();
    hay.windows(16).any(|w| runs.contains(w))
}

#[test]
fn an_encrypted_payload_holds_no_run_of_plaintext() {
    let inputs = Inputs::new(300);
    let plain = encode(&inputs, Encrypt::Nothing, None);
    // The check finds the tensors in a payload that is not encrypted.
    assert!(holds_a_run_of(&plain, &inputs.big) && holds_a_run_of(&plain, &inputs.flags));
    for encrypt in [Encrypt::Tensors, Encrypt::All] {
        let blob = encode(&inputs, encrypt, None);
        for i in 0..3 {
            assert!(
                !holds_a_run_of(&blob, inputs.plain(i)),
                "tensor {i} {encrypt:?}"
            );
        }
        let text = String::from_utf8_lossy(&blob);
        let hidden = encrypt == Encrypt::All;
        for name in [
            "layer.weight",
            "layer.bias",
            "mask",
            "secret_metadata",
            "shuffle",
        ] {
            assert_eq!(!text.contains(name), hidden, "{name} {encrypt:?}");
        }
    }
}

#[test]
fn encrypted_payloads_need_their_key() {
    let inputs = Inputs::new(3);
    for encrypt in [Encrypt::Tensors, Encrypt::All] {
        let blob = encode(&inputs, encrypt, None);
        refused(
            &blob,
            &Verifier::default(),
            Kind::Authentication,
            "pass key=",
        );
        refused(&blob, &keyed(&[&OTHER]), Kind::Authentication, "pass key=");
    }
    // Encrypting without a shared key is refused at once.
    let s = signing(None, Some(&SK));
    let e = prepare(&inputs.tensors(), &options(Encrypt::Tensors, &s))
        .err()
        .unwrap();
    assert_eq!(e.kind(), Kind::Input);
    assert!(e.to_string().contains("needs key="), "{e}");
}

#[test]
fn every_flipped_data_byte_is_refused_even_unverified() {
    let inputs = Inputs::new(3);
    for encrypt in [Encrypt::Tensors, Encrypt::All] {
        let blob = encode(&inputs, encrypt, None);
        let layout = parse_with(&blob, &keyed(&[&KEY])).unwrap();
        let data_start = layout.data_start;
        let step = (blob.len() - data_start) / 61 + 1;
        for at in (data_start..blob.len()).step_by(step) {
            let mut bad = blob.clone();
            bad[at] ^= 0x01;
            // The header still authenticates (it is untouched) or the sealed header
            // fails; either way no tensor decodes from altered bytes.
            let Ok(layout) = parse_with(&bad, &keyed(&[&KEY])) else {
                continue;
            };
            assert!(
                decode_all(&bad, &layout, true).is_err(),
                "verified, at {at}"
            );
            let e = decode_all(&bad, &layout, false);
            if let Err(e) = e {
                assert!(
                    matches!(e.kind(), Kind::Authentication | Kind::Integrity),
                    "{e}"
                );
            } else {
                // Only padding may differ without the AEAD noticing; verify catches it.
                assert!(layout.check_padding(&bad).is_err(), "at {at}");
            }
        }
    }
}

#[test]
fn sealed_blocks_cannot_move_between_tensors_or_payloads() {
    let inputs = Inputs::new(600);
    let blob = encode(&inputs, Encrypt::Tensors, None);
    let layout = parse_with(&blob, &keyed(&[&KEY])).unwrap();
    // Another payload with the same key and tensors: another nonce.
    let s = {
        let mut s = signing(Some(&KEY), None);
        s.nonce = Some([9; 16]);
        s
    };
    let p = prepare(&inputs.tensors(), &options(Encrypt::Tensors, &s)).unwrap();
    let mut other = vec![0; p.total_len()];
    p.write_into(&mut other).unwrap();
    let big = &layout.entries[0];
    let (from, to) = (big.start, big.start + big.length);
    // The first block of this payload's big tensor, from the other payload.
    let mut spliced = blob.clone();
    spliced[from..from + 1000].copy_from_slice(&other[from..from + 1000]);
    let e = decode_all(&spliced, &layout, false).unwrap_err();
    assert_eq!(e.kind(), Kind::Authentication, "{e}");
    assert_eq!(e.tensor(), Some("layer.weight"));
    assert_eq!(e.block(), Some(0));
    // Its second block where the first was.
    let block = crate::trust::seal::BLOCK + crate::trust::seal::TAG;
    let mut swapped = blob.clone();
    swapped.copy_within(from + block..from + 2 * block, from);
    let e = decode_all(&swapped, &layout, false).unwrap_err();
    assert_eq!(
        (e.kind(), e.block()),
        (Kind::Authentication, Some(0)),
        "{e}"
    );
    assert!(to > from + 2 * block);
    // The start of the big tensor's first block in place of the bias's: another tensor.
    let bias = &layout.entries[1];
    let n = bias.length.min(1000);
    let mut moved = blob.clone();
    moved.copy_within(from..from + n, bias.start);
    let e = decode_all(&moved, &layout, false).unwrap_err();
    assert_eq!(e.kind(), Kind::Authentication, "{e}");
    assert_eq!((e.tensor(), e.block()), (Some("layer.bias"), Some(0)));
}

#[test]
fn a_sealed_entry_or_header_in_a_plain_payload_is_refused() {
    let inputs = Inputs::new(3);
    // A plain payload whose entry claims to be sealed (hash recomputed): refused.
    let s = crate::trust::Signing::default();
    let p = prepare(&inputs.tensors()[2..3], &options(Encrypt::Nothing, &s)).unwrap();
    let mut blob = vec![0; p.total_len()];
    p.write_into(&mut blob).unwrap();
    edit_header(&mut blob, |h| {
        h.replace("\"hash\"", "\"sealed\":true,\"hash\"")
    });
    reseal_plain(&mut blob);
    refused(
        &blob,
        &Verifier::default(),
        Kind::Format,
        "not authenticated",
    );
    let mut blob2 = vec![0; blob.len()];
    let p = prepare(&inputs.tensors()[2..3], &options(Encrypt::Nothing, &s)).unwrap();
    p.write_into(&mut blob2).unwrap();
    edit_header(&mut blob2, |h| {
        h.replacen('{', "{\"sealed\":{\"length\":0,\"hash\":\"00\"},", 1)
    });
    reseal_plain(&mut blob2);
    refused(
        &blob2,
        &Verifier::default(),
        Kind::Format,
        "not authenticated",
    );
}

#[test]
fn a_key_holder_cannot_unseal_what_the_header_does_not_say() {
    // Even with the key (the header hash recomputed), a payload encrypted whole that
    // also shows tensors, or whose entries are not all sealed, is refused.
    let inputs = Inputs::new(3);
    let mut blob = encode(&inputs, Encrypt::All, None);
    edit_header(&mut blob, |h| {
        h.replacen("\"tensors\":[]", "\"metadata\":1,\"tensors\":[]", 1)
    });
    reseal_keyed(&mut blob, &KEY);
    refused(&blob, &keyed(&[&KEY]), Kind::Format, "shows no tensors");
    let mut blob = encode(&inputs, Encrypt::All, None);
    edit_header(&mut blob, |h| h.replace("\"length\":", "\"length\":1"));
    reseal_keyed(&mut blob, &KEY);
    assert!(parse_with(&blob, &keyed(&[&KEY])).is_err());
}
