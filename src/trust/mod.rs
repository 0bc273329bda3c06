//! Trust: who made a payload (`docs/FORMAT.md`, section 10). One 32-byte user key serves
//! every keyed role through subkeys derived from it ([`keys`]); Ed25519 signatures say
//! who made a payload ([`signature`]); [`credentials`] holds what a writer authenticates
//! with and what a reader accepts; tensor bytes are encrypted block by block under one
//! of the subkeys ([`seal`]).

pub mod credentials;
pub mod keys;
pub mod seal;
pub mod signature;

pub use credentials::{Signing, Verifier, NONCE_LEN};
pub use keys::{id_hex, key_from, key_id, parse_id, Key, KeyId, Subkeys, KEY_ID_LEN, KEY_LEN};
pub use seal::{open_into, plain_len, seal_into, sealed_len, PayloadNonce};
pub use signature::{
    generate_signing_key, public_key, PublicKey, Signer, PUBLIC_KEY_LEN, SIGNATURE_CONTEXT,
    SIGNATURE_LEN,
};
