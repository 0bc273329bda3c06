//! Tests of payloads that are themselves authenticated or signed, through `ChunkPlan`
//! and the reassembler: chunked as containers with the chunker's key, verified with
//! the reassembler's keys (keyed header hash), handed back unchecked without keys, and
//! refused when the reassembler trusts only some signers.

use super::*;
use crate::chunk::fixtures::{authenticated_container, container, Rng};
use crate::chunk::{ChunkPlan, PayloadKind};
use crate::error::Kind;
use crate::trust::public_key;

const KEY: [u8; 32] = [0x4b; 32];
const OTHER: [u8; 32] = [0x4c; 32];
const SIGNER: [u8; 32] = [0x51; 32];
const STRANGER: [u8; 32] = [0x52; 32];

/// Every chunk of `plan` over `payload` (which may differ from what the plan was made
/// for: the bytes a forger or a damaged sender puts under a real plan).
fn cut(plan: &ChunkPlan, payload: &[u8]) -> Vec<Vec<u8>> {
    plan.to_vecs(payload)
}

/// What `r` makes of `chunks`: the payload, or the error of the chunk that failed.
fn fed(r: &mut Reassembler, chunks: &[Vec<u8>]) -> Result<Option<Vec<u8>>> {
    let mut done = None;
    for c in chunks {
        if let Some(p) = r.add(c, 1.0)? {
            done = Some(p);
        }
    }
    Ok(done)
}

fn refused(r: &mut Reassembler, chunks: &[Vec<u8>], kind: Kind, words: &str) {
    let e = fed(r, chunks).expect_err("accepted");
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.to_string().contains(words), "{e} lacks {words:?}");
}

fn keyed() -> Reassembler {
    Reassembler::with_keys(Limits::default(), &[OTHER, KEY]).unwrap()
}

fn plain() -> Reassembler {
    Reassembler::new(Limits::default()).unwrap()
}

fn trusting(keys: &[[u8; 32]], signers: &[[u8; 32]]) -> Reassembler {
    let pks: Vec<_> = signers.iter().map(public_key).collect();
    Reassembler::with_trust(Limits::default(), keys, Some(&pks)).unwrap()
}

#[test]
fn a_keyed_payload_is_chunked_as_a_container_with_the_key() {
    let blob = authenticated_container(1, Some(&KEY), None);
    assert_eq!(blob[12], 1);
    let plan = ChunkPlan::new(&blob, 700, None, Some(&KEY)).unwrap();
    assert_eq!(plan.kind, PayloadKind::Container);
    assert_eq!(plan.digest[..], blob[32..64]);
    // Without the key, or with another one, it cannot be read: plain bytes.
    for key in [None, Some(&OTHER)] {
        let plan = ChunkPlan::new(&blob, 700, None, key).unwrap();
        assert_eq!(plan.kind, PayloadKind::Bytes);
        assert_eq!(plan.digest, *blake3::hash(&blob).as_bytes());
    }
    // A plain payload is still a container with a key, and a signed one without.
    for b in [
        container(1).0,
        authenticated_container(1, None, Some(&SIGNER)),
    ] {
        for key in [None, Some(&KEY)] {
            let plan = ChunkPlan::new(&b, 700, None, key).unwrap();
            assert_eq!(
                (plan.kind, &plan.digest[..]),
                (PayloadKind::Container, &b[32..64])
            );
        }
    }
}

#[test]
fn a_keyed_reassembler_verifies_a_keyed_payload_with_its_keys() {
    for signer in [None, Some(&SIGNER)] {
        let blob = authenticated_container(2, Some(&KEY), signer);
        let plan = ChunkPlan::new(&blob, 600, None, Some(&KEY)).unwrap();
        let mut chunks = cut(&plan, &blob);
        Rng(2).shuffle(&mut chunks);
        assert_eq!(fed(&mut keyed(), &chunks).unwrap(), Some(blob.clone()));
        // Plain and signed payloads in keyed chunks still complete.
        let other = container(2).0;
        let plan = ChunkPlan::new(&other, 600, None, Some(&KEY)).unwrap();
        assert_eq!(fed(&mut keyed(), &cut(&plan, &other)).unwrap(), Some(other));
    }
}

#[test]
fn a_keyed_reassembler_refuses_a_payload_its_keys_do_not_authenticate() {
    let blob = authenticated_container(3, Some(&KEY), None);
    let plan = ChunkPlan::new(&blob, 600, None, Some(&KEY)).unwrap();
    // A header byte (its padding) changed under the real plan: the keyed hash no
    // longer matches, whatever the tensor checksums say, also with verify=false.
    let header_len = u64::from_le_bytes(blob[16..24].try_into().unwrap()) as usize;
    let mut altered = blob.clone();
    altered[64 + header_len - 1] = b'\t';
    for verify in [true, false] {
        let mut r = Reassembler::with_keys(
            Limits {
                verify,
                ..Limits::default()
            },
            &[KEY],
        )
        .unwrap();
        refused(
            &mut r,
            &cut(&plan, &altered),
            Kind::Authentication,
            "header MAC mismatch",
        );
        assert_eq!(r.stats().failed, 1);
    }
    // A payload authenticated with a key the reassembler lacks, in chunks tagged with
    // one it has.
    let foreign = authenticated_container(3, Some(&[9; 32]), None);
    let mut plan = ChunkPlan::new(&foreign, 600, None, Some(&KEY)).unwrap();
    assert_eq!(plan.kind, PayloadKind::Bytes);
    plan.kind = PayloadKind::Container;
    plan.digest.copy_from_slice(&foreign[32..64]);
    refused(
        &mut keyed(),
        &cut(&plan, &foreign),
        Kind::Authentication,
        "pass key= or keys=",
    );
}

#[test]
fn without_keys_a_keyed_payload_is_returned_after_its_chunks_checks() {
    let blob = authenticated_container(4, Some(&KEY), None);
    let genuine_plan = ChunkPlan::new(&blob, 500, None, Some(&KEY)).unwrap();
    let chunks = cut(&genuine_plan, &blob);
    for verify in [true, false] {
        let mut r = Reassembler::new(Limits {
            verify,
            ..Limits::default()
        })
        .unwrap();
        assert_eq!(fed(&mut r, &chunks).unwrap(), Some(blob.clone()));
        assert_eq!(r.stats().completed, 1);
    }
    // What it can check, it does: the digest, and the length the preamble announces.
    let mut wrong = genuine_plan;
    wrong.digest[0] ^= 1;
    refused(
        &mut plain(),
        &cut(&wrong, &blob),
        Kind::Integrity,
        "content id",
    );
    let mut longer = blob.clone();
    longer.extend_from_slice(&[0; 64]);
    let mut plan = ChunkPlan::new(&longer, 500, None, Some(&KEY)).unwrap();
    plan.kind = PayloadKind::Container;
    plan.digest = [0; 32];
    refused(
        &mut plain(),
        &cut(&plan, &longer),
        Kind::Integrity,
        "preamble describes",
    );
    // Two bodies for one chunk: without the key nothing tells which is genuine.
    let mut forged = blob.clone();
    forged[blob.len() - 3] ^= 1;
    let last = chunks.len() - 1;
    let forged_last = &cut(&genuine_plan, &forged)[last];
    for (mut r, genuine) in [(plain(), false), (keyed(), true)] {
        assert_eq!(r.add(&chunks[last], 1.0).unwrap(), None);
        assert_eq!(r.add(forged_last, 1.0).unwrap(), None);
        assert_eq!(r.stats().conflicts, 1);
        if genuine {
            // With the key, the combination that verifies is found.
            assert_eq!(fed(&mut r, &chunks[..last]).unwrap(), Some(blob.clone()));
        } else {
            refused(&mut r, &chunks[..last], Kind::Authentication, "genuine");
        }
    }
}

#[test]
fn trusted_signers_are_required_of_every_finished_payload() {
    let signed = authenticated_container(5, None, Some(&SIGNER));
    let both = authenticated_container(5, Some(&KEY), Some(&SIGNER));
    let unsigned = container(5).0;
    let strange = authenticated_container(5, None, Some(&STRANGER));
    let chunks =
        |b: &[u8], key: Option<&[u8; 32]>| cut(&ChunkPlan::new(b, 800, None, key).unwrap(), b);
    let mut r = trusting(&[], &[STRANGER, SIGNER]);
    assert_eq!(r.trusted().map(<[_]>::len), Some(2));
    assert_eq!(
        fed(&mut r, &chunks(&signed, None)).unwrap(),
        Some(signed.clone())
    );
    assert_eq!(
        fed(&mut trusting(&[KEY], &[SIGNER]), &chunks(&both, Some(&KEY))).unwrap(),
        Some(both.clone())
    );
    for (blob, key, words) in [
        (&unsigned, None, "not signed"),
        (&strange, None, "not among the trusted keys"),
        (&both, None, "signer cannot be checked"),
        (&both, Some(&KEY), "signer cannot be checked"),
    ] {
        refused(
            &mut trusting(&[], &[SIGNER]),
            &chunks(blob, key),
            Kind::Authentication,
            words,
        );
    }
    // Bytes that are no payload at all; a signed payload sent as bytes is read anyway.
    let bytes = Rng(5).bytes(3000);
    refused(
        &mut trusting(&[], &[SIGNER]),
        &chunks(&bytes, None),
        Kind::Authentication,
        "not a tensorwire payload",
    );
    let plan = ChunkPlan::new(&both, 800, None, Some(&OTHER)).unwrap();
    assert_eq!(plan.kind, PayloadKind::Bytes);
    let mut r = trusting(&[OTHER, KEY], &[SIGNER]);
    assert_eq!(fed(&mut r, &cut(&plan, &both)).unwrap(), Some(both));
    // Nobody trusted: nothing completes.
    refused(
        &mut trusting(&[], &[]),
        &chunks(&signed, None),
        Kind::Authentication,
        "not among",
    );
}
