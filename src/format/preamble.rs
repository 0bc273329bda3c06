//! The fixed 64-byte preamble that opens every payload: magic, version, the lengths of
//! the header and data sections, and the header hash; and the alignment of sections.

use crate::error::{Error, Result};

/// The first eight bytes of every payload (PNG-style: catches text-mode mangling).
pub const MAGIC: [u8; 8] = *b"\x89TWR\r\n\x1a\n";
/// Major version written and read. A different major version is refused.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version written for plain payloads. Newer minor versions of 1.x are read
/// (they only add fields a v1.0 reader may ignore).
pub const VERSION_MINOR: u16 = 0;
/// Minor version written for payloads that use preamble bytes 12..14 (authenticated
/// or signed; FORMAT.md section 10). A v1.0 reader refuses them (non-zero reserved bytes).
pub const VERSION_MINOR_TRUST: u16 = 1;
/// Byte 12 `auth`: the header hash is plain BLAKE3.
pub const AUTH_PLAIN: u8 = 0;
/// Byte 12 `auth`: the header hash is BLAKE3 keyed with the payload-MAC subkey.
pub const AUTH_KEYED: u8 = 1;
/// Byte 13 `flags`, bit 0: the payload ends with a signature trailer.
pub const FLAG_SIGNED: u8 = 1;
/// Size of the fixed preamble that precedes the JSON header.
pub const PREAMBLE_LEN: usize = 64;
/// Every tensor's stored bytes, and the data section, start at a multiple of this.
pub const ALIGN: usize = 64;
/// Largest accepted JSON header, in bytes (padding included).
pub const MAX_HEADER_LEN: u64 = 256 << 20;

/// Round `n` up to the next multiple of [`ALIGN`].
pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN as u64 - 1)
        .map(|v| v & !(ALIGN as u64 - 1))
}

/// The 64-byte preamble: magic, version, section lengths and the header hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// Minor version of the writer.
    pub minor: u16,
    /// Byte 12: the header hash is keyed (an authenticated payload).
    pub keyed: bool,
    /// Byte 13, bit 0: a signature trailer follows the data section.
    pub signed: bool,
    /// Length of the JSON header including its space padding (a multiple of 64).
    pub header_len: u64,
    /// Length of the data section that follows the header.
    pub data_len: u64,
    /// blake3 (keyed, when `keyed`) of preamble bytes 0..32 followed by the header bytes.
    pub header_hash: [u8; 32],
}

impl Preamble {
    /// Serialise bytes 0..32 (everything the header hash covers).
    pub fn fixed_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12] = if self.keyed { AUTH_KEYED } else { AUTH_PLAIN };
        b[13] = if self.signed { FLAG_SIGNED } else { 0 };
        // 14..16 reserved, zero.
        b[16..24].copy_from_slice(&self.header_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.data_len.to_le_bytes());
        b
    }

    /// Serialise the whole preamble.
    pub fn to_bytes(&self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[..32].copy_from_slice(&self.fixed_bytes());
        b[32..].copy_from_slice(&self.header_hash);
        b
    }

    /// Parse and check the preamble at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Preamble> {
        if buf.len() < 8 || buf[..8] != MAGIC {
            return Err(Error::format(
                "not a tensorwire payload: the magic bytes are missing",
            ));
        }
        if buf.len() < PREAMBLE_LEN {
            return Err(Error::integrity(format!(
                "payload truncated: {} bytes, the preamble alone needs {PREAMBLE_LEN}",
                buf.len()
            )));
        }
        let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let major = u16_at(8);
        if major != VERSION_MAJOR {
            return Err(Error::format(format!(
                "unsupported format version {major}.{} (this reader reads version {VERSION_MAJOR}.x)",
                u16_at(10)
            )));
        }
        let minor = u16_at(10);
        if minor < VERSION_MINOR_TRUST && buf[12..14] != [0; 2] {
            return Err(Error::format(format!(
                "preamble bytes 12..14 are reserved in version {VERSION_MAJOR}.{minor} and not zero"
            )));
        }
        let keyed = match buf[12] {
            AUTH_PLAIN => false,
            AUTH_KEYED => true,
            other => {
                return Err(Error::format(format!(
                    "preamble byte 12 (auth) is {other}, not 0 (plain) or 1 (keyed)"
                )))
            }
        };
        if buf[13] & !FLAG_SIGNED != 0 {
            return Err(Error::format(format!(
                "preamble byte 13 (flags) is {:#04x}: bits other than 0 (signed) are set",
                buf[13]
            )));
        }
        if buf[14..16] != [0; 2] {
            return Err(Error::format("reserved preamble bytes 14..16 are not zero"));
        }
        let header_len = u64_at(16);
        if header_len == 0 || header_len % ALIGN as u64 != 0 || header_len > MAX_HEADER_LEN {
            return Err(Error::format(format!(
                "header length {header_len} is invalid (must be a non-zero multiple of {ALIGN}, at most {MAX_HEADER_LEN})"
            )));
        }
        let mut header_hash = [0u8; 32];
        header_hash.copy_from_slice(&buf[32..64]);
        Ok(Preamble {
            minor,
            keyed,
            signed: buf[13] & FLAG_SIGNED != 0,
            header_len,
            data_len: u64_at(24),
            header_hash,
        })
    }
}
