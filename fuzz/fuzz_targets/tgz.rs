//! Unpacks the input as a gzip-compressed tar bundle: the gzip framing
//! (header flags, extra fields, names, members, trailer) and the tar
//! inside, into a fresh directory with small limits.
#![no_main]

use edgedeploy::unpack::BundleType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgedeploy_fuzz::unpack_bytes(data, BundleType::Tgz));
