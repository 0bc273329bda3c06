//! Trust: who made a payload (`docs/FORMAT.md`, section 10). One 32-byte user key serves
//! every keyed role through subkeys derived from it ([`keys`]).

pub mod keys;

pub use keys::{id_hex, key_from, key_id, parse_id, Key, KeyId, Subkeys, KEY_ID_LEN, KEY_LEN};
