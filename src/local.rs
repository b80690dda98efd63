//! `deploy-local`: one deployment from a local bundle, no server.
