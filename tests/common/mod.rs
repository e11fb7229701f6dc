//! Helpers shared by the integration tests (`mod common;` in each test file).

// Each test file uses only some of these.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_for`] checks its condition.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `condition` every 20 ms until it holds, and panics naming `what` if it still does
/// not after `timeout`. Tests wait for states this way instead of sleeping and hoping.
pub(crate) async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
