//! S3's additional checksums (`x-amz-checksum-*`, as a header or an
//! aws-chunked trailer): CRC32, CRC32C, CRC64NVME, SHA1, SHA256, each
//! base64 of the big-endian digest.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crc::{CRC_32_ISCSI, CRC_32_ISO_HDLC, CRC_64_NVME, Crc, Digest};
use sha1::Sha1;
use sha2::Sha256;

static CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
static CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
static CRC64NVME: Crc<u64> = Crc::<u64>::new(&CRC_64_NVME);

/// A checksum algorithm S3 knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// CRC-32 (ISO HDLC), botocore's default.
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 5] =
        [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme, Algorithm::Sha1, Algorithm::Sha256];

    /// The header (and trailer) carrying it, e.g. `x-amz-checksum-crc32`.
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name in `x-amz-sdk-checksum-algorithm`, e.g. `CRC32`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// The algorithm of a header name (any case).
    pub fn from_header(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.header().eq_ignore_ascii_case(name))
    }

    /// The algorithm of a name (any case).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// Length of the raw digest in bytes.
    fn digest_len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    /// Whether `value` is base64 of a digest of the right length.
    pub fn is_well_formed(self, value: &str) -> bool {
        STANDARD.decode(value).is_ok_and(|raw| raw.len() == self.digest_len())
    }
}

/// A running checksum.
pub enum Hasher {
    /// CRC-32.
    Crc32(Digest<'static, u32>),
    /// CRC-32C.
    Crc32c(Digest<'static, u32>),
    /// CRC-64/NVME.
    Crc64Nvme(Digest<'static, u64>),
    /// SHA-1.
    Sha1(Sha1),
    /// SHA-256.
    Sha256(Sha256),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// A fresh checksum of `algorithm`.
    pub fn new(algorithm: Algorithm) -> Hasher {
        use sha2::Digest as _;
        match algorithm {
            Algorithm::Crc32 => Hasher::Crc32(CRC32.digest()),
            Algorithm::Crc32c => Hasher::Crc32c(CRC32C.digest()),
            Algorithm::Crc64Nvme => Hasher::Crc64Nvme(CRC64NVME.digest()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest as _;
        match self {
            Hasher::Crc32(d) | Hasher::Crc32c(d) => d.update(bytes),
            Hasher::Crc64Nvme(d) => d.update(bytes),
            Hasher::Sha1(d) => d.update(bytes),
            Hasher::Sha256(d) => d.update(bytes),
        }
    }

    /// Base64 of the big-endian digest.
    pub fn finish(self) -> String {
        use sha2::Digest as _;
        let raw: Vec<u8> = match self {
            Hasher::Crc32(d) | Hasher::Crc32c(d) => d.finalize().to_be_bytes().to_vec(),
            Hasher::Crc64Nvme(d) => d.finalize().to_be_bytes().to_vec(),
            Hasher::Sha1(d) => d.finalize().to_vec(),
            Hasher::Sha256(d) => d.finalize().to_vec(),
        };
        STANDARD.encode(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(algorithm: Algorithm, bytes: &[u8]) -> String {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    #[test]
    fn known_values() {
        // What botocore sent for b"hello world" * 10.
        assert_eq!(of(Algorithm::Crc32, &b"hello world".repeat(10)), "6LiFlw==");
        // Check values of the catalogue: "123456789".
        assert_eq!(of(Algorithm::Crc32, b"123456789"), STANDARD.encode(0xCBF4_3926_u32.to_be_bytes()));
        assert_eq!(of(Algorithm::Crc32c, b"123456789"), STANDARD.encode(0xE306_9283_u32.to_be_bytes()));
        assert_eq!(of(Algorithm::Crc64Nvme, b"123456789"), STANDARD.encode(0xAE8B_1486_0A79_9888_u64.to_be_bytes()));
        assert_eq!(of(Algorithm::Sha1, b""), "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
        assert!(Algorithm::Crc32.is_well_formed("6LiFlw=="));
        assert!(!Algorithm::Crc32.is_well_formed("6LiF"));
        assert_eq!(Algorithm::from_header("X-Amz-Checksum-CRC64NVME"), Some(Algorithm::Crc64Nvme));
        assert_eq!(Algorithm::from_name("crc32c"), Some(Algorithm::Crc32c));
    }
}
