//! The operator's commands (feature `server`): push a revision, deploy it
//! and follow the deployment, and the self-contained demo.

pub mod connect;
pub mod demo;
pub mod deploy;
pub mod push;
