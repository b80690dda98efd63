//! The operator's commands (feature `server`): push a revision, deploy it
//! and follow the deployment, list and show resources, stop and roll back,
//! remove and tag instances, and the self-contained demo.

pub mod commands;
pub mod connect;
pub mod demo;
pub mod deploy;
pub mod get;
pub mod instances;
pub mod list;
pub mod progress;
pub mod push;
pub mod rollback;
pub mod table;
