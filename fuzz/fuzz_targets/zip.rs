//! Unpacks the input as a zip bundle: central directory, local headers,
//! zip64, data descriptors, stored and deflated entries, into a fresh
//! directory with small limits.
#![no_main]

use edgedeploy::unpack::BundleType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edgedeploy_fuzz::unpack_bytes(data, BundleType::Zip));
