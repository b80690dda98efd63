//! Wire protocols shared by the agent and the server: AWS JSON 1.1 framing,
//! Signature Version 4, the command API's shapes and the deployment
//! specification.

pub mod command;
pub mod sigv4;
pub mod spec;
