//! Authenticated and signed payloads (FORMAT.md section 10): round trips through every
//! writer, and every refusal of the reader, before any tensor is decoded.

use crate::dtype::DType;
use crate::error::Kind;
use crate::format::preamble::{PREAMBLE_LEN, VERSION_MINOR_TRUST};
use crate::format::{parse, parse_with, prepare, EncodeOptions, Layout, TensorInput, TensorView};
use crate::trust::{key_id, public_key, Signing, Verifier, SIGNATURE_LEN};

const KEY: [u8; 32] = [7; 32];
const OTHER: [u8; 32] = [8; 32];
const SK: [u8; 32] = [21; 32];
const SK2: [u8; 32] = [22; 32];

fn floats(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

fn two_tensors(a: &[u8]) -> [TensorInput<'_>; 2] {
    [
        TensorInput {
            tensor: TensorView {
                name: "a",
                dtype: DType::F32,
                shape: &[100],
                data: a,
            },
            codec: "raw",
            base: None,
        },
        TensorInput {
            tensor: TensorView {
                name: "b",
                dtype: DType::F32,
                shape: &[10],
                data: &a[..40],
            },
            codec: "shuffle+zstd",
            base: None,
        },
    ]
}

fn encode_with(signing: Option<&Signing>) -> Vec<u8> {
    let a = floats(100);
    let inputs = two_tensors(&a);
    let opts = EncodeOptions {
        metadata: Some("{\"round\":3}"),
        auth: signing,
        ..Default::default()
    };
    let p = prepare(&inputs, &opts).unwrap();
    let mut out = vec![0xAA; p.total_len()];
    p.write_into(&mut out).unwrap();
    out
}

pub(crate) fn signing(key: Option<&[u8; 32]>, sk: Option<&[u8; 32]>) -> Signing {
    let mut s = Signing::new(key, sk);
    s.created = Some(1_700_000_000_000);
    s.nonce = Some([3; 16]);
    s
}

pub(crate) fn keyed(keys: &[&[u8; 32]]) -> Verifier {
    let mut v = Verifier::default();
    for k in keys {
        v.add_key(k);
    }
    v
}

fn trusting(pks: &[[u8; 32]]) -> Verifier {
    let mut v = Verifier::default();
    v.require_signers();
    for pk in pks {
        v.trust(*pk);
    }
    v
}

/// The error `parse_with` gives, which must be of `kind` and say `words`.
pub(crate) fn refused(blob: &[u8], v: &Verifier, kind: Kind, words: &str) {
    match parse_with(blob, v) {
        Ok(_) => panic!("accepted; expected {kind:?} saying {words:?}"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.to_string().contains(words), "{e:?} lacks {words:?}");
        }
    }
}

/// Recompute the header hash plainly, as an attacker without the key would.
pub(crate) fn reseal_plain(blob: &mut [u8]) {
    let header_len = u64::from_le_bytes(blob[16..24].try_into().unwrap()) as usize;
    let mut h = blake3::Hasher::new();
    h.update(&blob[..32]);
    h.update(&blob[PREAMBLE_LEN..PREAMBLE_LEN + header_len]);
    let hash = *h.finalize().as_bytes();
    blob[32..64].copy_from_slice(&hash);
}

/// Recompute the header hash keyed with `key`, as a holder of the key would.
pub(crate) fn reseal_keyed(blob: &mut [u8], key: &[u8; 32]) {
    let header_len = u64::from_le_bytes(blob[16..24].try_into().unwrap()) as usize;
    let sub = crate::trust::Subkeys::derive(key);
    let mut h = blake3::Hasher::new_keyed(&sub.payload_mac);
    h.update(&blob[..32]);
    h.update(&blob[PREAMBLE_LEN..PREAMBLE_LEN + header_len]);
    let hash = *h.finalize().as_bytes();
    blob[32..64].copy_from_slice(&hash);
}

/// The header text of `blob`, replaced by `f`'s edit of it (same length, re-padded).
pub(crate) fn edit_header(blob: &mut [u8], f: impl Fn(&str) -> String) {
    let header_len = u64::from_le_bytes(blob[16..24].try_into().unwrap()) as usize;
    let range = PREAMBLE_LEN..PREAMBLE_LEN + header_len;
    let text = std::str::from_utf8(&blob[range.clone()])
        .unwrap()
        .trim_end()
        .to_owned();
    let mut new = f(&text).into_bytes();
    assert!(new.len() <= header_len, "the edit must fit the padding");
    new.resize(header_len, b' ');
    blob[range].copy_from_slice(&new);
}

fn decoded(blob: &[u8], layout: &Layout) -> Vec<u8> {
    layout.verify(blob, None).unwrap();
    let mut out = vec![0u8; 40];
    layout.decode_into(blob, 1, &mut out, None, true).unwrap();
    out
}

#[test]
fn plain_payloads_stay_version_1_0_and_byte_identical() {
    let plain = encode_with(None);
    let unused = encode_with(Some(&Signing::default()));
    assert_eq!(plain, unused);
    assert_eq!(&plain[10..16], &[0, 0, 0, 0, 0, 0]);
    let layout = parse(&plain).unwrap();
    assert_eq!((layout.minor, layout.auth), (0, None));
    refused(
        &plain,
        &keyed(&[&KEY]),
        Kind::Authentication,
        "payload is not authenticated",
    );
    refused(
        &plain,
        &trusting(&[public_key(&SK)]),
        Kind::Authentication,
        "not signed",
    );
}

#[test]
fn keyed_round_trip_and_refusals() {
    let blob = encode_with(Some(&signing(Some(&KEY), None)));
    assert_eq!(
        u16::from_le_bytes([blob[10], blob[11]]),
        VERSION_MINOR_TRUST
    );
    assert_eq!((blob[12], blob[13]), (1, 0));
    let layout = parse_with(&blob, &keyed(&[&OTHER, &KEY])).unwrap();
    let auth = layout.auth.unwrap();
    assert_eq!(auth.key_id, Some(key_id(&KEY)));
    assert_eq!(
        (auth.created, auth.nonce, auth.signer),
        (1_700_000_000_000, [3; 16], None)
    );
    assert_eq!(decoded(&blob, &layout), floats(10));
    let id = crate::trust::id_hex(&key_id(&KEY));
    // No key, the wrong key.
    refused(
        &blob,
        &Verifier::default(),
        Kind::Authentication,
        &format!("key id {id}; pass key= or keys="),
    );
    refused(&blob, &keyed(&[&OTHER]), Kind::Authentication, &id);
    // A holder of another key who names it: the MAC does not match.
    let mut other = blob.clone();
    let other_id = crate::trust::id_hex(&key_id(&OTHER));
    edit_header(&mut other, |t| t.replace(&id, &other_id));
    refused(
        &other,
        &keyed(&[&OTHER]),
        Kind::Authentication,
        "header MAC mismatch",
    );
    // An altered header byte, every plain hash recomputed.
    let mut altered = blob.clone();
    edit_header(&mut altered, |t| t.replace("\"round\":3", "\"round\":4"));
    refused(
        &altered,
        &keyed(&[&KEY]),
        Kind::Authentication,
        "header MAC mismatch",
    );
    reseal_plain(&mut altered);
    refused(
        &altered,
        &keyed(&[&KEY]),
        Kind::Authentication,
        "header MAC mismatch",
    );
    // The auth byte cleared and the hash recomputed plainly: the key demands auth.
    let mut stripped = blob.clone();
    stripped[12] = 0;
    reseal_plain(&mut stripped);
    refused(
        &stripped,
        &keyed(&[&KEY]),
        Kind::Authentication,
        "not authenticated",
    );
    // The auth byte flipped to another value, or flipped without a reseal.
    let mut flipped = blob.clone();
    flipped[12] = 2;
    refused(&flipped, &keyed(&[&KEY]), Kind::Format, "byte 12");
    flipped[12] = 0;
    refused(
        &flipped,
        &keyed(&[&KEY]),
        Kind::Authentication,
        "not authenticated",
    );
    // Every byte of the header and of the data flipped: refused, as altered.
    for i in PREAMBLE_LEN..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x20;
        let result = parse_with(&bad, &keyed(&[&KEY])).and_then(|l| l.verify(&bad, None));
        let e = result.expect_err(&format!("flip at {i} went unnoticed"));
        assert!(
            matches!(e.root().kind(), Kind::Authentication | Kind::Integrity),
            "{i}: {e}"
        );
    }
}

#[test]
fn signed_round_trip_and_refusals() {
    let pk = public_key(&SK);
    let blob = encode_with(Some(&signing(None, Some(&SK))));
    assert_eq!((blob[12], blob[13]), (0, 1));
    let unsigned_len = encode_with(None).len();
    // Length rule: 64 + H + D + 64 (the header holds the auth object too).
    let layout = parse(&blob).unwrap();
    assert_eq!(layout.auth.unwrap().signer, Some(pk));
    assert!(blob.len() > unsigned_len + SIGNATURE_LEN - 1);
    parse_with(&blob, &trusting(&[public_key(&SK2), pk])).unwrap();
    assert_eq!(decoded(&blob, &layout), floats(10));
    // An untrusted signer; nobody trusted at all.
    refused(
        &blob,
        &trusting(&[public_key(&SK2)]),
        Kind::Authentication,
        "not among the trusted keys",
    );
    refused(
        &blob,
        &trusting(&[]),
        Kind::Authentication,
        "not among the trusted keys",
    );
    // The trailer cut, or extended.
    refused(
        &blob[..blob.len() - 1],
        &Verifier::default(),
        Kind::Authentication,
        "63 of 64",
    );
    refused(
        &blob[..blob.len() - SIGNATURE_LEN],
        &Verifier::default(),
        Kind::Authentication,
        "0 of 64",
    );
    let mut longer = blob.clone();
    longer.push(0);
    refused(
        &longer,
        &Verifier::default(),
        Kind::Format,
        "1 unexpected bytes",
    );
    // A flipped signature bit: refused even when nobody is trusted in particular.
    let mut bad_sig = blob.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    refused(
        &bad_sig,
        &Verifier::default(),
        Kind::Authentication,
        "does not verify",
    );
    // The signature of another key under this payload's signer.
    let other = encode_with(Some(&signing(None, Some(&SK2))));
    let mut swapped = blob.clone();
    let n = swapped.len();
    swapped[n - SIGNATURE_LEN..].copy_from_slice(&other[other.len() - SIGNATURE_LEN..]);
    refused(
        &swapped,
        &Verifier::default(),
        Kind::Authentication,
        "does not verify",
    );
    // Another signer named, and the hash recomputed: its signature is missing.
    let mut renamed = blob.clone();
    let (a, b) = (
        crate::trust::signature::hex(&pk),
        crate::trust::signature::hex(&public_key(&SK2)),
    );
    edit_header(&mut renamed, |t| t.replace(&a, &b));
    reseal_plain(&mut renamed);
    refused(
        &renamed,
        &trusting(&[public_key(&SK2)]),
        Kind::Authentication,
        "does not verify",
    );
    // A tensor changed and every plain blake3 recomputed: the signature does not verify.
    let mut forged = blob.clone();
    edit_header(&mut forged, |t| t.replace("\"round\":3", "\"round\":9"));
    reseal_plain(&mut forged);
    refused(
        &forged,
        &Verifier::default(),
        Kind::Authentication,
        "does not verify",
    );
    // The flags flipped: unsigned with a signer, or unknown bits.
    let mut unflagged = blob.clone();
    unflagged[13] = 0;
    refused(
        &unflagged,
        &Verifier::default(),
        Kind::Integrity,
        "header checksum",
    );
    reseal_plain(&mut unflagged);
    refused(
        &unflagged,
        &Verifier::default(),
        Kind::Format,
        "64 unexpected bytes",
    );
    let n = unflagged.len();
    refused(
        &unflagged[..n - SIGNATURE_LEN],
        &Verifier::default(),
        Kind::Format,
        "auth names a signer but the payload is not signed",
    );
    let mut flags = blob.clone();
    flags[13] = 3;
    refused(&flags, &Verifier::default(), Kind::Format, "byte 13");
}

#[test]
fn keyed_and_signed_together() {
    let pk = public_key(&SK);
    let blob = encode_with(Some(&signing(Some(&KEY), Some(&SK))));
    assert_eq!((blob[12], blob[13]), (1, 1));
    let mut v = keyed(&[&KEY]);
    v.trust(pk);
    let layout = parse_with(&blob, &v).unwrap();
    let auth = layout.auth.unwrap();
    assert_eq!((auth.key_id, auth.signer), (Some(key_id(&KEY)), Some(pk)));
    let mut altered = blob.clone();
    edit_header(&mut altered, |t| t.replace("\"round\":3", "\"round\":5"));
    reseal_keyed(&mut altered, &OTHER);
    refused(&altered, &v, Kind::Authentication, "header MAC mismatch");
    // A holder of the shared key cannot forge the signer's signature.
    reseal_keyed(&mut altered, &KEY);
    refused(&altered, &v, Kind::Authentication, "does not verify");
}

#[test]
fn the_auth_object_is_strict() {
    let blob = encode_with(Some(&signing(Some(&KEY), None)));
    let v = keyed(&[&KEY]);
    let cases: [(&str, &str, &str); 5] = [
        (
            "\"created\":",
            "\"extra\":1,\"created\":",
            "unknown field `extra`",
        ),
        (
            "\"created\":1700000000000",
            "\"created\":-1700000000000",
            "auth is not valid",
        ),
        (
            "\"nonce\":\"0303",
            "\"nonce\":\"0X03",
            "auth.nonce is not 32 lowercase hex",
        ),
        (
            "\"nonce\":\"0303",
            "\"nonce\":\"03",
            "auth.nonce is not 32 lowercase hex",
        ),
        (
            "\"key_id\":\"",
            "\"signer\":\"00\",\"key_id\":\"",
            "auth names a signer",
        ),
    ];
    for (from, to, words) in cases {
        let mut bad = blob.clone();
        edit_header(&mut bad, |t| {
            assert!(t.contains(from), "{t}");
            t.replacen(from, to, 1)
        });
        reseal_keyed(&mut bad, &KEY);
        refused(&bad, &v, Kind::Format, words);
    }
    // The object removed from a keyed payload: the key cannot be found.
    let mut gone = blob.clone();
    edit_header(&mut gone, |t| {
        let at = t.find(",\"auth\":").unwrap();
        format!("{}}}", &t[..at])
    });
    reseal_keyed(&mut gone, &KEY);
    refused(&gone, &v, Kind::Authentication, "no auth object");
    // A plain payload with a key id: refused, though nobody asked for a key.
    let mut plain = blob.clone();
    plain[12] = 0;
    reseal_plain(&mut plain);
    refused(
        &plain,
        &Verifier::default(),
        Kind::Format,
        "auth has a key_id but the header hash is not keyed",
    );
    // Version 1.0 does not know bytes 12..14.
    let mut old = blob.clone();
    old[10] = 0;
    refused(&old, &v, Kind::Format, "reserved in version 1.0");
}

#[test]
fn every_writer_signs_alike() {
    let s = signing(Some(&KEY), Some(&SK));
    let blob = encode_with(Some(&s));
    let a = floats(100);
    let inputs = two_tensors(&a);
    let opts = EncodeOptions {
        metadata: Some("{\"round\":3}"),
        auth: Some(&s),
        ..Default::default()
    };
    let mut file = std::io::Cursor::new(Vec::new());
    prepare(&inputs, &opts)
        .unwrap()
        .write_to(&mut file)
        .unwrap();
    assert_eq!(file.into_inner(), blob);
    let dir = std::env::temp_dir().join(format!("tw-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("signed.tw");
    crate::format::save_atomic(&inputs, &opts, &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), blob);
    std::fs::remove_dir_all(&dir).unwrap();
    // Fresh nonces and times when none are given.
    let fresh = Signing::new(Some(&KEY), None);
    let (x, y) = (encode_with(Some(&fresh)), encode_with(Some(&fresh)));
    let (ax, ay) = (
        parse_with(&x, &keyed(&[&KEY])).unwrap().auth.unwrap(),
        parse_with(&y, &keyed(&[&KEY])).unwrap().auth.unwrap(),
    );
    assert_ne!(ax.nonce, ay.nonce);
    assert!(ax.created > 1_700_000_000_000);
    let shown = format!("{fresh:?} {:?}", keyed(&[&KEY]));
    assert!(
        !shown.contains(&crate::trust::signature::hex(&KEY)) && !shown.contains("[7,"),
        "{shown}"
    );
}
