//! Liveness flags shared by the MQTT source, the writer (database and
//! Loki) and `/healthz`.
//!
//! Only plain atomics and short strings behind a `std` mutex held for a
//! copy; no task ever waits on another through this module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// What the bridge knows about its two connections.
#[derive(Debug, Default)]
pub struct Health {
    /// Connected to PostgreSQL with the schema migrated: until then the
    /// bridge is not ready, even if the database answers pings.
    db_ready: AtomicBool,
    mqtt_ready: AtomicBool,
    mqtt_problem: Mutex<String>,
    writes_failing: AtomicBool,
    write_problem: Mutex<String>,
    loki_failing: AtomicBool,
    loki_problem: Mutex<String>,
}

impl Health {
    /// Connected to the broker and subscribed.
    pub fn set_mqtt_ready(&self) {
        self.mqtt_ready.store(true, Ordering::Release);
    }

    /// Not connected (or not subscribed), and why.
    pub fn set_mqtt_down(&self, why: impl Into<String>) {
        self.mqtt_ready.store(false, Ordering::Release);
        *self
            .mqtt_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why.into();
    }

    /// `Ok` when connected and subscribed, else the last problem.
    pub fn mqtt(&self) -> Result<(), String> {
        if self.mqtt_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self
            .mqtt_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Err(if why.is_empty() {
            "not connected yet".to_owned()
        } else {
            why
        })
    }

    /// The writer connected and the migrations have run.
    pub fn set_db_ready(&self) {
        self.db_ready.store(true, Ordering::Release);
    }

    /// The writer stored a batch.
    pub fn set_writes_ok(&self) {
        self.writes_failing.store(false, Ordering::Release);
    }

    /// The writer failed to store a batch (it retries), and why.
    pub fn set_writes_failing(&self, why: impl Into<String>) {
        *self
            .write_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why.into();
        self.writes_failing.store(true, Ordering::Release);
    }

    /// `Ok` once the schema is ready and unless the writer's last attempt
    /// failed.
    pub fn writes(&self) -> Result<(), String> {
        if !self.db_ready.load(Ordering::Acquire) && !self.writes_failing.load(Ordering::Acquire) {
            return Err("connecting and migrating the schema".to_owned());
        }
        if !self.writes_failing.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self
            .write_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    /// A push to Loki was accepted (or refused for its data: Loki is up).
    pub fn set_loki_ok(&self) {
        self.loki_failing.store(false, Ordering::Release);
    }

    /// Pushes to Loki fail (the writer retries and holds its batch), and why.
    pub fn set_loki_failing(&self, why: impl Into<String>) {
        *self
            .loki_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why.into();
        self.loki_failing.store(true, Ordering::Release);
    }

    /// `Ok` unless the last push to Loki failed.
    pub fn loki(&self) -> Result<(), String> {
        if !self.loki_failing.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self
            .loki_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }
}
