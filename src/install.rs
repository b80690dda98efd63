//! Install the deployment archive's files per the AppSpec.
