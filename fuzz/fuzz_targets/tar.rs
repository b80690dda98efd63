//! Unpacks the input as a tar bundle (gzip and zip are recognised by their
//! magic bytes too), into a fresh directory with small limits.
#![no_main]

use edgedeploy::unpack::BundleType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgedeploy_fuzz::unpack_bytes(data, BundleType::Tar));
