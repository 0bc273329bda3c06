//! Trust: who made a payload (`docs/FORMAT.md`, section 10). One 32-byte user key serves
//! every keyed role through subkeys derived from it ([`keys`]); tensor bytes are
//! encrypted block by block under one of them ([`seal`]).

pub mod keys;
pub mod seal;

pub use keys::{id_hex, key_from, key_id, parse_id, Key, KeyId, Subkeys, KEY_ID_LEN, KEY_LEN};
pub use seal::{open_into, plain_len, seal_into, sealed_len, PayloadNonce};
