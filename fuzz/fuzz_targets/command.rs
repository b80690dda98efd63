//! Reads the input as the body of a command API answer, as the agent's
//! client does (blank means `{}`, anything else must be JSON), and decodes
//! it as each answer the agent expects: PollHostCommand (then the in-flight
//! record the agent writes and reads back, and the outbox file name it
//! makes of the command id), PutHostCommandAcknowledgement and
//! GetDeploymentSpecification; and as an error answer (`client::classify`).
#![no_main]

use edgedeploy::agent::inflight::InFlight;
use edgedeploy::agent::{outbox, spec};
use edgedeploy::client::classify;
use edgedeploy::protocol::command::{
    GetDeploymentSpecificationOutput, PollHostCommandOutput, PutHostCommandAcknowledgementOutput,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    for status in [400, 403, 429, 500] {
        let _ = classify(status, data);
    }
    let value: Value = if data.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(data) {
            Ok(value) => value,
            Err(_) => return,
        }
    };
    if let Ok(PollHostCommandOutput { host_command: Some(command) }) = serde_json::from_value(value.clone()) {
        let record = InFlight::received(&command, "boot", 1);
        let _ = record.event();
        let json = serde_json::to_string(&record).expect("an in-flight record always serializes");
        let back: InFlight = serde_json::from_str(&json).expect("the in-flight record reads back");
        assert_eq!(back, record, "the in-flight record changed on its way through the disk");
        let name = outbox::file_name(&command.host_command_identifier);
        assert!(
            !name.contains('/') && !name.contains('\0') && !name.starts_with('.') && name.len() <= 255,
            "outbox file name {name:?} is not one safe file name"
        );
    }
    let _ = serde_json::from_value::<PutHostCommandAcknowledgementOutput>(value.clone());
    if let Ok(output) = serde_json::from_value::<GetDeploymentSpecificationOutput>(value)
        && let Ok((decoded, _)) = spec::decode(output)
    {
        let _ = spec::to_deployment(&decoded);
    }
});
