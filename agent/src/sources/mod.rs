//! The agent's sources: one folder per capability, one contract
//! ([`Source`]), one registry (the `registry!` list at the end of this
//! file).
//!
//! # Adding a source
//!
//! 1. A folder `sources/<name>/` whose `mod.rs` has a unit struct
//!    implementing [`Source`]: its `[name]` section (raw struct read with
//!    `crate::config::fields` → validated settings, every problem collected), how it starts (a task
//!    through [`Context::spawn`], or a reporting task and its forwarder
//!    through [`Context::spawn_reporting`]), its `check --online` rows,
//!    its `check` summary and, if it has one, its `once` round.
//! 2. Its `pub mod` line and its line in the registry at the end of this
//!    file.
//!
//! The config loader, `check`, `check --online`, `once`, reload (SIGHUP)
//! and shutdown then know it: they call what the registry generates
//! ([`Sections`], and the [`Supervisor`], which owns the running
//! sources). Sources publish through [`Publisher`] and use no other part
//! of the uplink. They do not import each other, except two pure helpers
//! `cleanup` borrows: the disk probe's `Usage` and syslog's civil-date
//! arithmetic. The status file (`crate::status`) keeps its own
//! per-source fields: a source that wants lines there adds them in
//! `status.rs`.
//!
//! The registry is a macro that expands to plain code per source (what
//! was written by hand before it) rather than a table of trait objects:
//! only a running source is boxed (`Box<dyn Running>`, one vtable for
//! every task-shaped source), and nothing generic is copied per source
//! beyond the spawn helpers, as before.

pub mod cleanup;
pub mod disk;
pub mod forward;
pub mod heartbeat;
pub mod lte;
pub mod reach;
pub mod rtsp;
pub mod smart;
pub mod syslog;
pub mod ups;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::check::row::Row;
use crate::config::fields::{Res, Value};
use crate::config::Doc;
use crate::uplink::publish::Publisher;

/// How long a source task gets to stop after it is asked to. Sources only
/// wait on timers, except the syslog receiver, which publishes its
/// pending batches first (bounded at 1.5 s).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest accepted sampling interval (one day), for every
/// `interval_secs`.
pub const MAX_INTERVAL_SECS: u32 = 86_400;

/// Checks a sampling interval (`key` names it in the problem).
pub fn check_interval(key: &str, secs: u32, problems: &mut Vec<String>) -> Option<u32> {
    if (1..=MAX_INTERVAL_SECS).contains(&secs) {
        Some(secs)
    } else {
        problems.push(format!(
            "{key} = {secs}: must be between 1 and {MAX_INTERVAL_SECS} seconds"
        ));
        None
    }
}

/// Reads section `name` of `doc` with `read` (a mistake names its
/// line); an absent table is `T::default()`. What [`Source::read`] is
/// for most sources.
pub fn read_section<'a, T: Default>(
    doc: &Doc<'a>,
    name: &str,
    problems: &mut Vec<String>,
    read: fn(&Value<'a>) -> Res<T>,
) -> Option<T> {
    read_optional(doc, name, problems, read).map(Option::unwrap_or_default)
}

/// [`read_section`] for a source that is off without its table (`None`
/// inside: absent).
pub fn read_optional<'a, T>(
    doc: &Doc<'a>,
    name: &str,
    problems: &mut Vec<String>,
    read: fn(&Value<'a>) -> Res<T>,
) -> Option<Option<T>> {
    doc.section(name, &format!("[{name}] "), problems, read)
}

/// A boxed future, as a running source's object-safe calls return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The contract of a source: everything the agent needs to know about one
/// capability. Implemented on a unit struct in the source's folder.
pub trait Source {
    /// The config section (`[NAME]`), and the source's name in reload
    /// lines and logs.
    const NAME: &'static str;

    /// `[NAME]` as written in the file (`Option<_>` for a source that is
    /// off without its table).
    type Raw;

    /// Validated settings; `Option<_>` for a source that is off without
    /// its table.
    type Config: Clone + PartialEq + fmt::Debug + Send + Sync + 'static;

    /// Reads `[NAME]` from the document; pushes a problem and returns
    /// `None` if it cannot. Usually one line: [`read_section`] with the
    /// section's reader (serde's words, `crate::config::fields`); a source
    /// with its own words (`[reach]`, `[lte]`) gets the value from
    /// [`Doc::get`].
    fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> Option<Self::Raw>;

    /// Validates what [`Source::read`] got; pushes every problem and
    /// returns `None` if there was one. Pure: no sockets, no files but
    /// those it names.
    fn validate(raw: Self::Raw, problems: &mut Vec<String>) -> Option<Self::Config>;

    /// Its part of `check`'s one-paragraph summary, without secrets
    /// (`None`: nothing to say).
    fn summary(cfg: &Self::Config) -> Option<String>;

    /// Starts it with these settings; `None` when they turn it off.
    fn start(cx: &Context, cfg: &Self::Config) -> Option<Box<dyn Running>>;

    /// Its rows in `check --online`: real probes, plain words.
    fn check(cfg: &Self::Config) -> impl Future<Output = Vec<Row>>;

    /// One round for `sitewatch-agent once`, publishing through `p`;
    /// `note` gets a plain-words line when it publishes nothing, and why.
    fn once(
        p: &Publisher,
        cfg: &Self::Config,
        note: &mut dyn FnMut(String),
    ) -> impl Future<Output = ()>;
}

/// A started source, as the supervisor holds it.
pub trait Running: Send {
    /// Takes new settings in place (the syslog receiver keeps its
    /// sockets); `new` holds every source's section and a source reads
    /// its own. `None`: it cannot, so the supervisor restarts it.
    fn update<'a>(&'a mut self, _new: &'a Sections) -> Option<BoxFuture<'a, ()>> {
        None
    }

    /// Stops it (bounded by the source itself or by [`STOP_TIMEOUT`]).
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// A source that is one task: cancelled, then awaited for at most
/// [`STOP_TIMEOUT`].
pub struct Task {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running for Task {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.stop.cancel();
            if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
                tracing::warn!("A source did not stop in time");
            }
        })
    }
}

/// What a starting source gets from the agent.
pub struct Context {
    /// Where messages go.
    pub publisher: Publisher,
    /// When the agent process started (`agent_uptime_secs`).
    pub started: tokio::time::Instant,
    /// Counts MQTT sessions; sources that report at once wait for the
    /// first one.
    session: tokio::sync::watch::Receiver<u32>,
    /// Where sources keep state across restarts: systemd's
    /// `$STATE_DIRECTORY`, else the outbox directory (the outbox only
    /// reads its own `*.seg` files), else nowhere.
    pub state_dir: Option<PathBuf>,
    /// Syslog sockets from systemd (socket activation), kept across
    /// restarts of the receiver.
    pub inherited: Arc<Mutex<syslog::Inherited>>,
    /// Parent of every source task's token: shutdown cancels them all at
    /// once.
    stop: CancellationToken,
}

impl Context {
    /// For sources publishing through `publisher`; `session` counts MQTT
    /// sessions.
    pub fn new(
        publisher: Publisher,
        started: tokio::time::Instant,
        session: tokio::sync::watch::Receiver<u32>,
        state_dir: Option<PathBuf>,
        inherited: syslog::Inherited,
    ) -> Context {
        Context {
            publisher,
            started,
            session,
            state_dir,
            inherited: Arc::new(Mutex::new(inherited)),
            stop: CancellationToken::new(),
        }
    }

    /// Completes at the first MQTT connection (so a first report is not
    /// only queued), or when the uplink is gone.
    pub fn first_connect(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.session.clone();
        async move {
            // Err only if the uplink is gone; then there is nothing to wait for.
            let _ = rx.wait_for(|s| *s > 0).await;
        }
    }

    /// Runs `task` with a stop token of its own.
    pub fn spawn<F>(&self, task: impl FnOnce(CancellationToken) -> F) -> Box<Task>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.child_token();
        let task = crate::spawn::spawn(task(stop.clone()));
        Box::new(Task { stop, task })
    }

    /// Runs a reporting source (camera probes, SMART, cleanup): `source`
    /// sends its own reports over a small bounded channel (it waits when
    /// the forwarder is behind, it never grows memory) and `forward` turns
    /// them into messages for the publisher. When the source stops it
    /// drops its sender, so the forwarder drains what is left and ends.
    pub fn spawn_reporting<T, S, SF, F, FF>(&self, source: S, forward: F) -> Box<Task>
    where
        T: Send + 'static,
        S: FnOnce(tokio::sync::mpsc::Sender<T>, CancellationToken) -> SF + Send + 'static,
        SF: Future<Output = ()> + Send + 'static,
        F: FnOnce(Publisher, tokio::sync::mpsc::Receiver<T>) -> FF + Send + 'static,
        FF: Future<Output = ()> + Send + 'static,
    {
        let publisher = self.publisher.clone();
        self.spawn(move |token| async move {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let forwarder = crate::spawn::spawn(forward(publisher, rx));
            source(tx, token).await;
            let _ = forwarder.await;
        })
    }
}

/// Owns the running sources: starts them, applies a reload to the ones
/// whose section changed, stops them all at exit.
pub struct Supervisor {
    cx: Context,
    /// One slot per source; `None` when off.
    running: Slots,
}

impl Supervisor {
    /// Stops every source: all are told at once, then each is awaited
    /// (bounded by [`STOP_TIMEOUT`] overall).
    pub async fn stop(&mut self) {
        self.cx.stop.cancel();
        if tokio::time::timeout(STOP_TIMEOUT, self.stop_each())
            .await
            .is_err()
        {
            tracing::warn!("Sources did not stop in time");
        }
    }
}

/// Applies new settings to one source: in place if it can take them,
/// else a restart (or a stop, or a start).
async fn reload_one(
    slot: &mut Option<Box<dyn Running>>,
    new: &Sections,
    start: &dyn Fn() -> Option<Box<dyn Running>>,
) {
    if let Some(update) = slot.as_mut().and_then(|r| r.update(new)) {
        update.await;
        return;
    }
    if let Some(old) = slot.take() {
        old.stop().await;
    }
    *slot = start();
}

/// Builds, from one list of `field: SourceType` lines (in the order
/// sources start, appear in `check` and `once`, are reloaded and stop):
/// [`Sections`], [`NAMES`], the raw sections the loader reads, and the
/// [`Supervisor`]'s slots. It expands to plain code per source, as if
/// written by hand: no registry of boxed objects to pay for.
macro_rules! registry {
    ($($field:ident: $src:ty),* $(,)?) => {
        /// Every source's validated settings: one field per source, named
        /// after its `[section]`.
        #[derive(Debug, Clone)]
        pub struct Sections {
            $(
                #[doc = concat!("`[", stringify!($field), "]`: see [`", stringify!($src), "`].")]
                pub $field: <$src as Source>::Config,
            )*
        }

        /// Every source's name (and config section), in registry order.
        pub const NAMES: &[&str] = &[$(<$src as Source>::NAME),*];

        /// Every source's section as written; `None` where it could not
        /// be read (a problem says why).
        pub(crate) struct RawSections {
            $($field: Option<<$src as Source>::Raw>,)*
        }

        impl RawSections {
            /// Reads every source's section on its own, so a mistake in
            /// one does not hide a mistake in another.
            pub(crate) fn read(doc: &Doc<'_>, problems: &mut Vec<String>) -> RawSections {
                RawSections {
                    $($field: <$src as Source>::read(doc, problems),)*
                }
            }

            /// Validates every section that could be read.
            pub(crate) fn validate(self, problems: &mut Vec<String>) -> Option<Sections> {
                $(let $field = self.$field.and_then(|raw| <$src as Source>::validate(raw, problems));)*
                Some(Sections { $($field: $field?,)* })
            }
        }

        impl Sections {
            /// Every source's part of `check`'s summary, each after `"; "`.
            pub(crate) fn summary(&self, out: &mut String) {
                $(
                    if let Some(part) = <$src as Source>::summary(&self.$field) {
                        out.push_str("; ");
                        out.push_str(&part);
                    }
                )*
            }

            /// Every source's rows in `check --online`.
            pub(crate) async fn check(&self) -> Vec<Row> {
                let mut rows = Vec::new();
                $(rows.extend(<$src as Source>::check(&self.$field).await);)*
                rows
            }

            /// Every source's round for `sitewatch-agent once`.
            pub(crate) async fn once(&self, p: &Publisher, note: &mut dyn FnMut(String)) {
                $(<$src as Source>::once(p, &self.$field, note).await;)*
            }
        }

        /// The running sources, one slot per source.
        struct Slots {
            $($field: Option<Box<dyn Running>>,)*
        }

        impl Supervisor {
            /// Starts every source `s` turns on.
            pub fn start(cx: Context, s: &Sections) -> Supervisor {
                let running = Slots {
                    $($field: <$src as Source>::start(&cx, &s.$field),)*
                };
                Supervisor { cx, running }
            }

            /// Applies `new` over `old`: each source whose section changed
            /// takes the new settings in place or restarts with them (or
            /// stops, or starts). Returns the names of those sources.
            pub async fn reload(&mut self, old: &Sections, new: &Sections) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(
                    if old.$field != new.$field {
                        let cx = &self.cx;
                        reload_one(&mut self.running.$field, new, &|| {
                            <$src as Source>::start(cx, &new.$field)
                        })
                        .await;
                        changed.push(<$src as Source>::NAME);
                    }
                )*
                changed
            }

            /// Awaits each source's stop, in registry order.
            async fn stop_each(&mut self) {
                $(
                    if let Some(r) = self.running.$field.take() {
                        r.stop().await;
                    }
                )*
            }
        }
    };
}

registry! {
    heartbeat: heartbeat::HeartbeatSource,
    disk: disk::DiskSource,
    syslog: syslog::SyslogSource,
    rtsp: rtsp::RtspSource,
    smart: smart::SmartSource,
    cleanup: cleanup::CleanupSource,
    ups: ups::UpsSource,
    reach: reach::ReachSource,
    lte: lte::LteSource,
}
