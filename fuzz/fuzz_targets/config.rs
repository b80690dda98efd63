//! Parses the input as the agent's configuration file (`Config::parse`,
//! what `Config::load` runs on the file's text).
#![no_main]

use edgedeploy::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Config::load reads the file with read_to_string: not UTF-8 is an error.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(loaded) = Config::parse(text) {
        assert!(loaded.config.max_revisions >= 1, "max_revisions {} below 1", loaded.config.max_revisions);
    }
});
