//! A bounded queue of background tasks: at most `max_concurrent` run at once and at most
//! `max_pending` are queued or running; beyond that a task is refused at once (the caller sheds
//! it), so nothing waits for the queue and its memory stays bounded. It knows nothing of what
//! the tasks do (`exchange::background` judges with it).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

use crate::config::BackgroundSection;
use crate::metrics::Metrics;

pub struct Queue {
    permits: Arc<Semaphore>,
    /// Tasks accepted and not yet finished (queued or running).
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    metrics: Arc<Metrics>,
}

/// A place in the queue, held for as long as its task lives, however the task ends.
pub struct Slot {
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pending.fetch_sub(1, Ordering::Release);
        self.metrics.background_pending.dec();
    }
}

impl Queue {
    pub fn new(cfg: &BackgroundSection, metrics: Arc<Metrics>) -> Queue {
        Queue {
            permits: Arc::new(Semaphore::new(cfg.max_concurrent)),
            pending: Arc::default(),
            max_pending: cfg.max_pending,
            metrics,
        }
    }

    /// Tasks queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// A place for one more task, or `None` when the queue is full.
    pub fn reserve(&self) -> Option<Slot> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_pending).then_some(n + 1)
            })
            .ok()?;
        self.metrics.background_pending.inc();
        Some(Slot {
            pending: self.pending.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// Runs `task` in its place once one of the `max_concurrent` runners is free.
    pub fn spawn(&self, slot: Slot, task: impl Future<Output = ()> + Send + 'static) {
        let permits = self.permits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            task.await;
        });
    }
}
