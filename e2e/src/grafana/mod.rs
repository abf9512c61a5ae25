//! What `tests/grafana.rs` needs to prove the Grafana provisioning without
//! Grafana: pure helpers, each with its own unit tests
//! (`cargo test -p sitewatch-e2e --lib`).
//!
//! - [`macros`]: template variables and the PostgreSQL data source's
//!   macros, expanded the way Grafana expands them; Grafana durations.
//! - [`logql`]: a LogQL syntax check (no LogQL engine is available here).
//! - [`csv`]: `psql --csv` output read into [`csv::Rows`].
//! - [`alert`]: an alert rule's threshold applied to its query's rows.
//! - [`provisioning`]: Grafana's environment interpolation of provisioned
//!   values, the functions a Go template calls, Prometheus durations.
//!
//! Nothing here starts a process or touches the network; the test file
//! owns PostgreSQL, the broker and the binaries.

pub mod alert;
pub mod csv;
pub mod logql;
pub mod macros;
pub mod provisioning;
