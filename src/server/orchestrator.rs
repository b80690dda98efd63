//! The orchestrator: moves active deployments forward.

use std::sync::Arc;

use super::State;

/// Runs until the task is aborted.
pub async fn run(state: Arc<State>) {
    loop {
        tokio::time::sleep(state.settings.tick).await;
    }
}
