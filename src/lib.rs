//! edgedeploy: CodeDeploy-compatible deployments for fleets of small
//! on-premises Linux devices.
//!
//! The agent's data flow, one module per stage (see `docs/install.md`):
//! [`appspec`] parses the application specification, [`unpack`] turns a
//! bundle into a deployment archive, [`install`] maps its files onto the
//! device, [`hooks`] runs the lifecycle scripts, and [`journal`] is the one
//! way state reaches the disk. [`local`] strings them together for
//! `edgedeploy-agent deploy-local`.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod appspec;
#[cfg(feature = "server")]
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod diagnostic;
pub mod engine;
pub mod fetch;
pub mod hooks;
pub mod install;
pub mod journal;
pub mod local;
pub mod logger;
pub mod protocol;
pub mod resolve;
#[cfg(feature = "server")]
pub mod server;
pub mod state;
pub mod unpack;
pub mod users;

#[allow(unsafe_code)] // The one module that calls libc; each call has a SAFETY note.
pub(crate) mod sys;
