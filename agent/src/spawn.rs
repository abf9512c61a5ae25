//! Spawning and `block_on` with one task type per output type. tokio
//! instantiates its task harness (poll, complete, cancel, join, drop,
//! dealloc) for every future or closure type it runs, and `block_on`
//! inlines its scheduler loop for every future; boxing first leaves one
//! instance per output type. The price is one allocation per spawn, which
//! the agent does a few times per source and round, never per message.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{AbortHandle, JoinError, JoinHandle, JoinSet};

/// A boxed future, as the agent's tasks run.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// [`tokio::spawn`], boxed.
pub fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
    tokio::spawn(Box::pin(f) as BoxFuture<T>)
}

/// [`tokio::task::spawn_blocking`], boxed, with the output type-erased
/// too, so that every blocking job is one task type.
pub fn spawn_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Blocking<T> {
    let job: Box<dyn FnOnce() -> Box<dyn Any + Send> + Send + 'static> =
        Box::new(move || Box::new(f()) as Box<dyn Any + Send>);
    Blocking {
        handle: tokio::task::spawn_blocking(job),
        out: PhantomData,
    }
}

/// The handle of a [`spawn_blocking`] job: a [`JoinHandle`] that yields
/// the job's `T` (or the [`JoinError`] of a panic).
pub struct Blocking<T> {
    handle: JoinHandle<Box<dyn Any + Send>>,
    out: PhantomData<fn() -> T>,
}

impl<T> Blocking<T> {
    /// Whether the job has ended ([`JoinHandle::is_finished`]).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

impl<T: 'static> Future for Blocking<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(cx).map(|r| {
            r.map(|out| match out.downcast::<T>() {
                Ok(v) => *v,
                Err(_) => unreachable!("a blocking job yields the type it was spawned with"),
            })
        })
    }
}

/// [`JoinSet::spawn`], boxed.
pub fn spawn_in<T: Send + 'static>(
    set: &mut JoinSet<T>,
    f: impl Future<Output = T> + Send + 'static,
) -> AbortHandle {
    set.spawn(Box::pin(f) as BoxFuture<T>)
}

/// [`Runtime::block_on`](tokio::runtime::Runtime::block_on), with the
/// future boxed: tokio's scheduler loop, which `block_on` inlines, is
/// then compiled once for all the commands instead of once per future.
pub fn block_on<T>(rt: &tokio::runtime::Runtime, f: impl Future<Output = T>) -> T {
    let mut out = None;
    let slot = &mut out;
    let task: Pin<Box<dyn Future<Output = ()> + '_>> = Box::pin(async move {
        *slot = Some(f.await);
    });
    rt.block_on(task);
    match out {
        Some(v) => v,
        // block_on returns only once the future has completed.
        None => unreachable!("block_on returned before its future completed"),
    }
}
