//! Spawning with one task type per output type. tokio instantiates its
//! task harness (poll, complete, cancel, join, drop, dealloc) for every
//! future or closure type it runs; boxing first leaves one instance per
//! output type. The price is one allocation per spawn, which the agent
//! does a few times per source and round, never per message.

use std::future::Future;
use std::pin::Pin;

use tokio::task::{AbortHandle, JoinHandle, JoinSet};

/// A boxed future, as the agent's tasks run.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// [`tokio::spawn`], boxed.
pub fn spawn<T: Send + 'static>(
    f: impl Future<Output = T> + Send + 'static,
) -> JoinHandle<T> {
    tokio::spawn(Box::pin(f) as BoxFuture<T>)
}

/// [`tokio::task::spawn_blocking`], boxed.
pub fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    tokio::task::spawn_blocking(Box::new(f) as Box<dyn FnOnce() -> T + Send + 'static>)
}

/// [`JoinSet::spawn`], boxed.
pub fn spawn_in<T: Send + 'static>(
    set: &mut JoinSet<T>,
    f: impl Future<Output = T> + Send + 'static,
) -> AbortHandle {
    set.spawn(Box::pin(f) as BoxFuture<T>)
}
