//! Command line of `sitewatch-agent`: lexopt splits the arguments, the
//! help text is fixed here. It was clap's derive API; the text, the error
//! messages and the exit statuses (0 for help and version, 2 for a usage
//! error) are the ones clap printed, at a fraction of the code: clap's
//! builder, its runtime-built help and styles were about 100 KB of the
//! aarch64 agent.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use lexopt::Arg::{Long, Short, Value};
use sitewatch_agent::discover::{DiscoverArgs, DEFAULT_WAIT_SECS};
use sitewatch_agent::sources::rtsp::cli::ProbeArgs;
use sitewatch_agent::sources::smart::DeviceType;

/// What the command line asks for.
#[derive(Debug)]
pub struct Cli {
    pub config: PathBuf,
    pub allow_insecure_permissions: bool,
    pub command: Option<Command>,
}

#[derive(Debug)]
pub enum Command {
    Run,
    Check {
        online: bool,
    },
    Probe(ProbeArgs),
    Discover(DiscoverArgs),
    Cleanup {
        dry_run: bool,
        yes: bool,
    },
    Smart {
        device: Option<PathBuf>,
        kind: Option<DeviceType>,
        json: bool,
    },
    Status {
        json: bool,
        file: Option<PathBuf>,
    },
    Once,
}

/// The subcommands, in the order `--help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Top,
    Run,
    Check,
    Probe,
    Discover,
    Cleanup,
    Smart,
    Status,
    Once,
    Help,
}

const SUBS: [Sub; 9] = [
    Sub::Run,
    Sub::Check,
    Sub::Probe,
    Sub::Discover,
    Sub::Cleanup,
    Sub::Smart,
    Sub::Status,
    Sub::Once,
    Sub::Help,
];

const OPT_CONFIG: &str = "  -c, --config <FILE>               Config file (TOML). Default: /etc/sitewatch/agent.toml, or on OpenWrt the file the init script generates from UCI, /var/etc/sitewatch/agent.toml, when the first does not exist";
const OPT_USER: &str =
    "  -u, --user <USER>                 User name (or put user:password@ in the URL)";
const OPT_ALLOW: &str = "      --allow-insecure-permissions  Start even if a password or key file (or a config with inline passwords) is readable by every user. Also SITEWATCH_ALLOW_INSECURE_PERMISSIONS=1";
const OPT_PASSWORD: &str = "      --password <PASSWORD>         Password. Visible to other users in `ps`: prefer --password-file";
const OPT_PASSWORD_FILE: &str =
    "      --password-file <FILE>        File whose first line is the password";
const OPT_TRANSPORT: &str =
    "      --transport <TRANSPORT>       RTP transport: tcp (default) or udp [default: tcp]";
const OPT_DURATION: &str =
    "      --duration <DURATION>         Seconds to watch the stream [default: 8]";
const OPT_MIN_FPS: &str = "      --min-fps <MIN_FPS>           Minimum acceptable frame rate (default: 3/4 of what the stream declares)";
const OPT_JSON_PROBE: &str =
    "      --json                        Print one JSON object (one per line with --config)";
const OPT_HELP: &str = "  -h, --help                        Print help";
const OPT_TYPE: &str = "      --type <TYPE>                 Force the protocol: sat, sat12 (old USB bridges), nvme or scsi";
const OPT_JSON_SMART: &str =
    "      --json                        One JSON object (DEVICE given) or an array of them";
const OPT_JSON_STATUS: &str =
    "      --json                        One JSON object: verdict, message and the agent's status";
const OPT_FILE: &str =
    "      --file <FILE>                 Read this status file instead of the config's";
const OPT_DRY_RUN: &str =
    "      --dry-run                     Only print what would be deleted (wins over --yes)";
const OPT_YES: &str = "      --yes                         Really delete the files";
const OPT_ONLINE: &str = "      --online                      Commissioning check: also try the broker (DNS, TCP, TLS with certificate dates, MQTT login), every disk and the syslog ports, and print one table with what to do for each failure";
const OPT_USER_ONVIF: &str =
    "  -u, --user <USER>                 ONVIF user name (the blocks name it for RTSP too)";
const OPT_WAIT: &str =
    "      --wait <SECS>                 Seconds to wait for answers to the multicast probe [default: 3]";
const OPT_INTERFACE: &str = "      --interface <ADDR>            Send the probe from this IPv4 address of the gateway (its LAN interface) instead of the default multicast route";
const OPT_PROBE_STREAMS: &str =
    "      --probe                       Also play each stream found once and print the verdict next to its block";
const OPT_VERSION: &str = "  -V, --version                     Print version";

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Top => "",
            Sub::Run => "run",
            Sub::Check => "check",
            Sub::Probe => "probe",
            Sub::Discover => "discover",
            Sub::Cleanup => "cleanup",
            Sub::Smart => "smart",
            Sub::Status => "status",
            Sub::Once => "once",
            Sub::Help => "help",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Sub::Top => "Site agent: reports a CCTV site's status, heartbeat, disks (usage and SMART), cameras (RTSP probes) and device syslog to MQTT, and cleans up old recordings when a disk fills",
            Sub::Run => "Run the agent (the default)",
            Sub::Check => "Check the config and print every problem; exit status 1 if any. Never opens a network connection unless --online is given",
            Sub::Probe => "Probe an RTSP stream (or every configured camera) and say whether it plays; exit status 0 only when every stream is ok",
            Sub::Discover => "Find ONVIF cameras on the LAN (WS-Discovery) and print ready-to-paste [[rtsp.camera]] blocks for their main and sub streams; exit status 0 when at least one block was printed",
            Sub::Cleanup => "Run one retention cleanup pass over the [cleanup] roots and print what it deleted. Without --yes it only prints what it would delete",
            Sub::Smart => "Read SMART from DEVICE (or every disk) natively and print model, serial, verdict with reasons, temperature, power-on hours and key attributes. Exit status 1 if any disk is warning, critical or unreadable, or no disk was found (with or without --json). Needs root (CAP_SYS_RAWIO for SATA/USB, CAP_SYS_ADMIN for NVMe)",
            Sub::Status => "Show what the running agent is doing: connection and since when, broker, last PUBACK, outbox depth and drops, each source's last result. Read from the status file the agent rewrites ([status] file; default $RUNTIME_DIRECTORY/status.json under systemd, else /var/run/sitewatch/status.json). Exit status 0 when the agent is connected and its status is up to date, 1 otherwise (not running, stale, disconnected, no file)",
            Sub::Once => "Run every configured source one round and print the messages it would publish (`TOPIC PAYLOAD`, one per line). Never connects to the broker, never touches the outbox, never deletes (cleanup is a dry run); camera probes do connect to the cameras. Syslog has no round and is skipped",
            Sub::Help => "Print this message or the help of the given subcommand(s)",
        }
    }

    /// The usage line after the program name.
    fn usage(self) -> &'static str {
        match self {
            Sub::Top => "[OPTIONS] [COMMAND]",
            Sub::Run => "run [OPTIONS]",
            Sub::Check => "check [OPTIONS]",
            Sub::Probe => "probe [OPTIONS] [URL]",
            Sub::Discover => "discover [OPTIONS]",
            Sub::Cleanup => "cleanup [OPTIONS]",
            Sub::Smart => "smart [OPTIONS] [DEVICE]",
            Sub::Status => "status [OPTIONS]",
            Sub::Once => "once [OPTIONS]",
            Sub::Help => "help [COMMAND]...",
        }
    }

    fn arguments(self) -> Option<&'static str> {
        match self {
            Sub::Probe => Some("  [URL]  rtsp://host[:port]/path. Without it, every camera in the config file (-c/--config) is probed and a table is printed"),
            Sub::Smart => Some("  [DEVICE]  Device node, e.g. /dev/sda or /dev/nvme0n1 (default: every disk in /sys/block)"),
            Sub::Help => Some("  [COMMAND]...  Print help for the subcommand(s)"),
            _ => None,
        }
    }

    /// The option lines, in clap's order (`OPT_CONFIG` gets its default).
    fn options(self) -> &'static [&'static str] {
        match self {
            Sub::Top => &[OPT_CONFIG, OPT_ALLOW, OPT_HELP, OPT_VERSION],
            Sub::Run | Sub::Once => &[OPT_CONFIG, OPT_ALLOW, OPT_HELP],
            Sub::Check => &[OPT_CONFIG, OPT_ONLINE, OPT_ALLOW, OPT_HELP],
            Sub::Probe => &[
                OPT_CONFIG,
                OPT_USER,
                OPT_ALLOW,
                OPT_PASSWORD,
                OPT_PASSWORD_FILE,
                OPT_TRANSPORT,
                OPT_DURATION,
                OPT_MIN_FPS,
                OPT_JSON_PROBE,
                OPT_HELP,
            ],
            Sub::Discover => &[
                OPT_CONFIG,
                OPT_USER_ONVIF,
                OPT_ALLOW,
                OPT_PASSWORD,
                OPT_PASSWORD_FILE,
                OPT_WAIT,
                OPT_INTERFACE,
                OPT_PROBE_STREAMS,
                OPT_HELP,
            ],
            Sub::Cleanup => &[OPT_CONFIG, OPT_DRY_RUN, OPT_ALLOW, OPT_YES, OPT_HELP],
            Sub::Smart => &[OPT_CONFIG, OPT_TYPE, OPT_ALLOW, OPT_JSON_SMART, OPT_HELP],
            Sub::Status => &[OPT_CONFIG, OPT_JSON_STATUS, OPT_ALLOW, OPT_FILE, OPT_HELP],
            Sub::Help => &[],
        }
    }

    fn by_name(name: &str) -> Option<Sub> {
        SUBS.into_iter().find(|s| s.name() == name)
    }
}

/// The text `--help` prints for `sub`.
fn help(bin: &str, sub: Sub) -> String {
    let mut s = format!("{}\n\nUsage: {bin} {}\n", sub.about(), sub.usage());
    if sub == Sub::Top {
        s.push_str("\nCommands:\n");
        // clap pads to the longest name.
        let width = SUBS.iter().map(|c| c.name().len()).max().unwrap_or(0);
        for c in SUBS {
            s.push_str(&format!("  {:<width$}  {}\n", c.name(), c.about()));
        }
    }
    if let Some(a) = sub.arguments() {
        s.push_str(&format!("\nArguments:\n{a}\n"));
    }
    if !sub.options().is_empty() {
        s.push_str("\nOptions:\n");
        for o in sub.options() {
            s.push_str(o);
            if *o == OPT_CONFIG {
                let default = sitewatch_agent::config::default_path();
                s.push_str(&format!(" [default: {}]", default.display()));
            }
            s.push('\n');
        }
    }
    s
}

/// A usage error, worded as clap worded it.
struct Usage {
    message: String,
    /// The subcommand whose usage line follows the message, if any.
    usage: Option<Sub>,
}

impl Usage {
    fn new(message: String, usage: Option<Sub>) -> Self {
        Usage { message, usage }
    }

    fn unexpected(arg: &str, sub: Sub) -> Self {
        Usage::new(format!("unexpected argument '{arg}' found"), Some(sub))
    }

    fn render(&self, bin: &str) -> String {
        let mut s = format!("error: {}\n\n", self.message);
        if let Some(sub) = self.usage {
            s.push_str(&format!("Usage: {bin} {}\n\n", sub.usage()));
        }
        s.push_str("For more information, try '--help'.\n");
        s
    }
}

/// What parsing ends in besides a [`Cli`]: text to print and the status.
pub enum Exit {
    Help(String),
    Error(String),
}

impl Exit {
    /// Prints it (help on stdout, errors on stderr) and gives the status.
    pub fn print(self) -> ExitCode {
        match self {
            Exit::Help(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Exit::Error(text) => {
                eprint!("{text}");
                ExitCode::from(2)
            }
        }
    }
}

/// Parses the process's own arguments.
pub fn parse_env(version: &str) -> Result<Cli, Exit> {
    let mut args = std::env::args_os();
    let bin = args
        .next()
        .map(|a| {
            let p = PathBuf::from(a);
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "sitewatch-agent".into());
    parse(&bin, version, args)
}

/// Parses `args` (without the program name); `bin` names the program in
/// usage lines.
pub fn parse(
    bin: &str,
    version: &str,
    args: impl IntoIterator<Item = OsString>,
) -> Result<Cli, Exit> {
    let mut p = lexopt::Parser::from_args(args);
    let mut st = State::default();
    match st.run(&mut p, version) {
        Ok(Some(text)) => Err(Exit::Help(text.replace(BIN, bin))),
        Ok(None) if st.sub == Some(Sub::Help) => {
            Err(Exit::Help(help(bin, st.help_for.unwrap_or(Sub::Top))))
        }
        Ok(None) => Ok(st.finish()),
        Err(u) => Err(Exit::Error(u.render(bin).replace(BIN, bin))),
    }
}

/// Everything seen so far.
#[derive(Default)]
struct State {
    sub: Option<Sub>,
    /// `help NAME`: the subcommand whose help is asked for.
    help_for: Option<Sub>,
    config: Option<PathBuf>,
    allow: bool,
    online: bool,
    dry_run: bool,
    yes: bool,
    json: bool,
    positional: Option<OsString>,
    kind: Option<DeviceType>,
    file: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    transport: Option<String>,
    duration: Option<u32>,
    min_fps: Option<f32>,
    wait: Option<u32>,
    interface: Option<std::net::Ipv4Addr>,
    probe: bool,
}

/// Placeholder for the program name in help text (filled in by `parse`).
const BIN: &str = "\u{0}BIN";

fn is_set<T>(o: &Option<T>) -> bool {
    o.is_some()
}

impl State {
    fn current(&self) -> Sub {
        self.sub.unwrap_or(Sub::Top)
    }

    /// `Ok(Some(text))`: print the help or version text and exit 0.
    fn run(&mut self, p: &mut lexopt::Parser, version: &str) -> Result<Option<String>, Usage> {
        while let Some(arg) = p.next().map_err(|e| lex_error(e, self.current()))? {
            let sub = self.current();
            match arg {
                Short('h') | Long("help") => {
                    if sub != Sub::Help {
                        return Ok(Some(help(BIN, sub)));
                    }
                    return Err(Usage::new(
                        format!("unrecognized subcommand '{}'", spelled(&arg)),
                        Some(Sub::Top),
                    ));
                }
                Short('V') | Long("version") if sub == Sub::Top => {
                    return Ok(Some(format!("sitewatch-agent {version}\n")));
                }
                Short('c') | Long("config") if sub != Sub::Help => {
                    let v = value(p, "--config <FILE>", sub)?;
                    once(is_set(&self.config), "--config <FILE>", sub)?;
                    self.config = Some(v.into());
                }
                Long("allow-insecure-permissions") if sub != Sub::Help => {
                    no_value(p, "--allow-insecure-permissions", sub)?;
                    once(self.allow, "--allow-insecure-permissions", sub)?;
                    self.allow = true;
                }
                Long(name) => {
                    let name = name.to_owned();
                    self.long(p, &name, sub)?;
                }
                Short(c) if matches!(sub, Sub::Probe | Sub::Discover) && c == 'u' => {
                    let v = string(value(p, "--user <USER>", sub)?, "--user <USER>")?;
                    once(is_set(&self.user), "--user <USER>", sub)?;
                    self.user = Some(v);
                }
                Short(c) => return Err(Usage::unexpected(&format!("-{c}"), sub)),
                Value(v) => {
                    if let Some(text) = self.value(v, sub)? {
                        return Ok(Some(text));
                    }
                }
            }
        }
        Ok(None)
    }

    /// A `--name` of the current subcommand.
    fn long(&mut self, p: &mut lexopt::Parser, name: &str, sub: Sub) -> Result<(), Usage> {
        match (sub, name) {
            (Sub::Check, "online" | "connect") => {
                no_value(p, &format!("--{name}"), sub)?;
                once(self.online, "--online", sub)?;
                self.online = true;
            }
            (Sub::Cleanup, "dry-run") => {
                no_value(p, "--dry-run", sub)?;
                once(self.dry_run, "--dry-run", sub)?;
                self.dry_run = true;
            }
            (Sub::Cleanup, "yes") => {
                no_value(p, "--yes", sub)?;
                once(self.yes, "--yes", sub)?;
                self.yes = true;
            }
            (Sub::Probe | Sub::Smart | Sub::Status, "json") => {
                no_value(p, "--json", sub)?;
                once(self.json, "--json", sub)?;
                self.json = true;
            }
            (Sub::Smart, "type") => {
                let v = string(value(p, "--type <TYPE>", sub)?, "--type <TYPE>")?;
                once(is_set(&self.kind), "--type <TYPE>", sub)?;
                self.kind = Some(
                    v.parse::<DeviceType>()
                        .map_err(|e| invalid(&v, "--type <TYPE>", &e))?,
                );
            }
            (Sub::Status, "file") => {
                let v = value(p, "--file <FILE>", sub)?;
                once(is_set(&self.file), "--file <FILE>", sub)?;
                self.file = Some(v.into());
            }
            (Sub::Probe | Sub::Discover, "user" | "username") => {
                let v = string(value(p, "--user <USER>", sub)?, "--user <USER>")?;
                once(is_set(&self.user), "--user <USER>", sub)?;
                self.user = Some(v);
            }
            (Sub::Probe | Sub::Discover, "password") => {
                let v = string(
                    value(p, "--password <PASSWORD>", sub)?,
                    "--password <PASSWORD>",
                )?;
                once(is_set(&self.password), "--password <PASSWORD>", sub)?;
                self.password = Some(v);
            }
            (Sub::Probe | Sub::Discover, "password-file") => {
                let v = value(p, "--password-file <FILE>", sub)?;
                once(is_set(&self.password_file), "--password-file <FILE>", sub)?;
                self.password_file = Some(v.into());
            }
            (Sub::Probe, "transport") => {
                let v = string(
                    value(p, "--transport <TRANSPORT>", sub)?,
                    "--transport <TRANSPORT>",
                )?;
                once(is_set(&self.transport), "--transport <TRANSPORT>", sub)?;
                self.transport = Some(v);
            }
            (Sub::Probe, "duration") => {
                const ARG: &str = "--duration <DURATION>";
                let v = string(value(p, ARG, sub)?, ARG)?;
                once(is_set(&self.duration), ARG, sub)?;
                self.duration = Some(match v.parse::<u32>() {
                    Ok(d) => d,
                    // clap's range check, then the parser's own words.
                    Err(_) if v.parse::<i64>().is_ok() => {
                        return Err(invalid(&v, ARG, &format!("{v} is not in 0..=4294967295")))
                    }
                    Err(e) => return Err(invalid(&v, ARG, &e)),
                });
            }
            (Sub::Probe, "min-fps") => {
                const ARG: &str = "--min-fps <MIN_FPS>";
                let v = string(value(p, ARG, sub)?, ARG)?;
                once(is_set(&self.min_fps), ARG, sub)?;
                self.min_fps = Some(v.parse::<f32>().map_err(|e| invalid(&v, ARG, &e))?);
            }
            (Sub::Discover, "wait") => {
                const ARG: &str = "--wait <SECS>";
                let v = string(value(p, ARG, sub)?, ARG)?;
                once(is_set(&self.wait), ARG, sub)?;
                self.wait = Some(v.parse::<u32>().map_err(|e| invalid(&v, ARG, &e))?);
            }
            (Sub::Discover, "interface") => {
                const ARG: &str = "--interface <ADDR>";
                let v = string(value(p, ARG, sub)?, ARG)?;
                once(is_set(&self.interface), ARG, sub)?;
                self.interface = Some(v.parse().map_err(|e| invalid(&v, ARG, &e))?);
            }
            (Sub::Discover, "probe") => {
                no_value(p, "--probe", sub)?;
                once(self.probe, "--probe", sub)?;
                self.probe = true;
            }
            _ => return Err(Usage::unexpected(&format!("--{name}"), sub)),
        }
        Ok(())
    }

    /// A word: the subcommand, a subcommand's positional argument, or
    /// `help`'s subcommand name.
    fn value(&mut self, v: OsString, sub: Sub) -> Result<Option<String>, Usage> {
        let text = v.to_string_lossy().into_owned();
        match sub {
            Sub::Top => match Sub::by_name(&text) {
                Some(s) => self.sub = Some(s),
                None => {
                    return Err(Usage::new(
                        format!("unrecognized subcommand '{text}'"),
                        Some(Sub::Top),
                    ))
                }
            },
            Sub::Help => match (self.help_for, Sub::by_name(&text)) {
                (None, Some(s)) => self.help_for = Some(s),
                (for_sub, _) => {
                    return Err(Usage::new(
                        format!("unrecognized subcommand '{text}'"),
                        Some(for_sub.unwrap_or(Sub::Top)),
                    ))
                }
            },
            Sub::Probe | Sub::Smart if self.positional.is_none() => self.positional = Some(v),
            _ => return Err(Usage::unexpected(&text, sub)),
        }
        Ok(None)
    }

    fn finish(self) -> Cli {
        let command = match self.sub {
            None => None,
            Some(Sub::Top | Sub::Run | Sub::Help) => Some(Command::Run),
            Some(Sub::Check) => Some(Command::Check {
                online: self.online,
            }),
            Some(Sub::Probe) => Some(Command::Probe(ProbeArgs {
                url: self.positional.map(|v| v.to_string_lossy().into_owned()),
                user: self.user,
                password: self.password,
                password_file: self.password_file,
                transport: self.transport.unwrap_or_else(|| "tcp".into()),
                duration: self.duration.unwrap_or(8),
                min_fps: self.min_fps,
                json: self.json,
            })),
            Some(Sub::Discover) => Some(Command::Discover(DiscoverArgs {
                user: self.user,
                password: self.password,
                password_file: self.password_file,
                wait_secs: self.wait.unwrap_or(DEFAULT_WAIT_SECS),
                interface: self.interface,
                probe: self.probe,
            })),
            Some(Sub::Cleanup) => Some(Command::Cleanup {
                dry_run: self.dry_run,
                yes: self.yes,
            }),
            Some(Sub::Smart) => Some(Command::Smart {
                device: self.positional.map(PathBuf::from),
                kind: self.kind,
                json: self.json,
            }),
            Some(Sub::Status) => Some(Command::Status {
                json: self.json,
                file: self.file,
            }),
            Some(Sub::Once) => Some(Command::Once),
        };
        Cli {
            config: self
                .config
                .unwrap_or_else(sitewatch_agent::config::default_path),
            allow_insecure_permissions: self.allow,
            command,
        }
    }
}

/// How clap spelled an argument in its messages.
fn spelled(arg: &lexopt::Arg) -> String {
    match arg {
        Short(c) => format!("-{c}"),
        Long(l) => format!("--{l}"),
        Value(v) => v.to_string_lossy().into_owned(),
    }
}

/// The value of an option (`--opt v`, `--opt=v`, `-cv`). Like clap, a
/// following word that starts with `-` is not taken as the value.
fn value(p: &mut lexopt::Parser, arg: &str, sub: Sub) -> Result<OsString, Usage> {
    let missing = || {
        Usage::new(
            format!("a value is required for '{arg}' but none was supplied"),
            None,
        )
    };
    if let Some(v) = p.optional_value() {
        return Ok(v);
    }
    let mut raw = p.raw_args().map_err(|_| missing())?;
    match raw.peek().map(|v| v.to_string_lossy().into_owned()) {
        None => Err(missing()),
        Some(next) if next.len() > 1 && next.starts_with('-') => {
            if next.parse::<f64>().is_ok() {
                // A negative number: clap points at `--`.
                Err(Usage::new(
                    format!(
                        "unexpected argument '{next}' found\n\n  tip: to pass '{next}' as a value, use '-- {next}'"
                    ),
                    Some(sub),
                ))
            } else if known(sub, &next) {
                Err(missing())
            } else {
                Err(Usage::unexpected(&next, sub))
            }
        }
        Some(_) => raw.next().ok_or_else(missing),
    }
}

/// Whether `word` (`--name`, `--name=v`, `-x...`) is an option of `sub`.
fn known(sub: Sub, word: &str) -> bool {
    let long = |name: &str| {
        sub.options().iter().any(|line| {
            line.trim_start()
                .split([' ', ','])
                .any(|w| w == format!("--{name}"))
        }) || (sub == Sub::Check && name == "connect")
            || (sub == Sub::Discover && name == "username")
    };
    match word.strip_prefix("--") {
        Some(rest) => long(rest.split('=').next().unwrap_or(rest)),
        None => word.chars().nth(1).is_some_and(|c| {
            sub.options()
                .iter()
                .any(|l| l.trim_start().starts_with(&format!("-{c},")))
        }),
    }
}

/// A flag given a value (`--json=yes`).
fn no_value(p: &mut lexopt::Parser, flag: &str, sub: Sub) -> Result<(), Usage> {
    match p.optional_value() {
        None => Ok(()),
        Some(v) => {
            let usage = if sub == Sub::Top {
                flag.to_owned()
            } else {
                format!("{} {flag}", sub.name())
            };
            Err(Usage::new(
                format!(
                    "unexpected value '{}' for '{flag}' found; no more were expected\n\nUsage: {BIN} {usage}",
                    v.to_string_lossy()
                ),
                None,
            ))
        }
    }
}

fn once(seen: bool, arg: &str, sub: Sub) -> Result<(), Usage> {
    if seen {
        return Err(Usage::new(
            format!("the argument '{arg}' cannot be used multiple times"),
            Some(sub),
        ));
    }
    Ok(())
}

fn string(v: OsString, arg: &str) -> Result<String, Usage> {
    v.into_string().map_err(|v| {
        invalid(
            &v.to_string_lossy(),
            arg,
            &"invalid UTF-8 was detected in one or more arguments",
        )
    })
}

fn invalid(v: &str, arg: &str, e: &dyn std::fmt::Display) -> Usage {
    Usage::new(format!("invalid value '{v}' for '{arg}': {e}"), None)
}

fn lex_error(e: lexopt::Error, sub: Sub) -> Usage {
    match e {
        lexopt::Error::UnexpectedArgument(a) => Usage::unexpected(&a.to_string_lossy(), sub),
        other => Usage::new(other.to_string(), Some(sub)),
    }
}
