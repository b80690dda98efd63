//! Decodes the input as the payload of a deployment specification (the
//! JSON text inside the GenericEnvelope of GetDeploymentSpecification), as
//! the agent does: `agent::spec::decode`, then `to_deployment` and the
//! last-event rule. A decoded specification's ids must be usable as folder
//! names, since the agent makes directories of them.
#![no_main]

use edgedeploy::agent::spec;
use edgedeploy::appspec::LifecycleEvent;
use edgedeploy::protocol::command::{
    DeploymentSpecificationEnvelopes, Envelope, FORMAT_TEXT_JSON, GetDeploymentSpecificationOutput,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The payload is a JSON string in the answer: always text.
    let payload = String::from_utf8_lossy(data).into_owned();
    let output = GetDeploymentSpecificationOutput {
        deployment_system: Some("CodeDeploy".into()),
        deployment_specification: Some(DeploymentSpecificationEnvelopes {
            generic_envelope: Some(Envelope { format: FORMAT_TEXT_JSON.into(), payload }),
            variant_id: None,
            variant_envelope: None,
        }),
    };
    let Ok((decoded, _json)) = spec::decode(output) else { return };
    for id in [&decoded.deployment_id, &decoded.deployment_group_id] {
        assert!(
            !id.is_empty() && !id.starts_with('.') && !id.contains('/') && !id.contains('\0'),
            "decoded id {id:?} is not a safe folder name"
        );
    }
    let _ = spec::to_deployment(&decoded);
    for event in LifecycleEvent::ALL {
        let _ = spec::is_last_event(Some(&decoded), event.name());
    }
});
