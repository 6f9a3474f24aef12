//! The `meridian` command line: `serve`, `check`, `explain` (and `simulate`, in
//! [`crate::simulate`]), with the exit codes of the
//! SPEC (0 ok, 1 invalid input, 2 runtime failure). The commands that talk to a running
//! server (`status`, `drain`, `undrain`, `reload`, `explain --live`) live in [`crate::ctl`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::reload::Reloader;
use crate::server::{self, ListenSettings};
use crate::snapshot::{self, Snapshot};

// Output and exit codes are on the ground floor (crate::base::out), so that the commands
// (ctl, simulate, manpage) use them without importing this module, which imports them.
use crate::base::out::{errln, out, outln, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME};

#[derive(Parser, Debug)]
#[command(
    name = "meridian",
    version,
    about = "Authoritative DNS server with global server load balancing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve {
        /// Config file; relative paths inside it resolve against its folder.
        #[arg(long, default_value = "config/meridian.toml")]
        config: PathBuf,
    },
    /// Validate config, zones and GeoIP database; print every problem as file:line:col: message.
    Check {
        #[arg(long, default_value = "config/meridian.toml")]
        config: PathBuf,
    },
    /// Print, without serving, the answer a query would get and why.
    Explain {
        /// The name to ask for.
        name: String,
        /// Record type (A or AAAA for balanced names; any type works).
        #[arg(long = "type", default_value = "A")]
        rtype: String,
        /// Client source address.
        #[arg(long, default_value = "127.0.0.1")]
        client: IpAddr,
        /// EDNS Client Subnet, e.g. 81.2.69.0/24.
        #[arg(long)]
        ecs: Option<String>,
        /// Treat an endpoint (by address) or a whole region as down; repeatable.
        #[arg(long)]
        down: Vec<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Config [default: $MERIDIAN_CONFIG, else config/meridian.toml, else
        /// /etc/meridian/meridian.toml]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Ask the running server: its real health, drain and RTT state.
        #[arg(long, conflicts_with = "down")]
        live: bool,
        /// With --live: admin API URL [default: [admin].listen of --config]
        #[arg(long, value_name = "URL", requires = "live")]
        admin: Option<String>,
    },
    /// Show the live state of a running server: services, regions, endpoints, drains.
    Status(crate::ctl::StatusArgs),
    /// Take an endpoint or a region out of answers until undrained (kept across restarts).
    Drain(crate::ctl::DrainArgs),
    /// Put a drained endpoint or region back into answers.
    Undrain(crate::ctl::DrainArgs),
    /// Reload the running server's config, zones and GeoIP data (as SIGHUP).
    Reload(crate::ctl::ReloadArgs),
    /// Send an endpoint's state for a `push` health profile (PUT /api/v1/health).
    Push(crate::ctl::PushArgs),
    /// Replay recorded queries under a change (--down, --drain, --new-config): answer shares
    /// per service and region now and after, and how many client networks move.
    Simulate(crate::simulate::Args),
    /// DNSSEC: `meridian dnssec ds` prints the DS records for the parent.
    #[command(subcommand)]
    Dnssec(DnssecCommand),
    /// Write the man pages (meridian.1 and one per subcommand) for packaging; hidden because
    /// operators read the result, not the command.
    #[command(hide = true)]
    Man {
        /// Folder to write the pages into; without it, meridian.1 goes to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_INVALID,
            };
        }
    };
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => serve(&config),
        Command::Man { out } => {
            crate::manpage::write(<Cli as clap::CommandFactory>::command(), out)
        }
        Command::Explain {
            name,
            rtype,
            client,
            ecs,
            json,
            config,
            live: true,
            admin,
            ..
        } => crate::ctl::explain_live(
            crate::ctl::Admin { admin, config },
            crate::ctl::LiveQuery {
                name,
                rtype,
                client,
                ecs,
                json,
            },
        ),
        Command::Explain {
            name,
            rtype,
            client,
            ecs,
            down,
            json,
            config,
            ..
        } => explain(
            &config.unwrap_or_else(crate::ctl::default_config),
            name,
            &rtype,
            client,
            ecs,
            down,
            json,
        ),
        Command::Status(a) => crate::ctl::status(a),
        Command::Drain(a) => crate::ctl::drain(a, true),
        Command::Undrain(a) => crate::ctl::drain(a, false),
        Command::Reload(a) => crate::ctl::reload(a),
        Command::Push(a) => crate::ctl::push(a),
        Command::Simulate(a) => crate::simulate::main(a),
        Command::Dnssec(c) => c.run(),
    }
}

fn explain(
    path: &Path,
    name: String,
    rtype: &str,
    client: IpAddr,
    ecs: Option<String>,
    down: Vec<String>,
    json: bool,
) -> i32 {
    let snap = match load_or_report(path) {
        Some(s) => s,
        None => return EXIT_INVALID,
    };
    let rtype = match hickory_proto::rr::RecordType::from_str(&rtype.to_ascii_uppercase()) {
        Ok(t) => t,
        Err(_) => {
            errln!("meridian explain: --type `{rtype}` is not a record type");
            return EXIT_INVALID;
        }
    };
    let ecs = match ecs.as_deref().map(crate::config::parse_cidr) {
        None => None,
        Some(Some(e)) => Some(e),
        Some(None) => {
            errln!("meridian explain: --ecs must be a network like 81.2.69.0/24");
            return EXIT_INVALID;
        }
    };
    // The saved drains count, as they would after a restart of the server; said either way.
    let state_dir = snap.config.state_dir();
    let note = match snap
        .health
        .drains
        .load_read_only(&state_dir, &snap.services, &snap.regions)
    {
        Ok(0) => format!(
            "no saved drains in {} (live drains and health: --live)",
            state_dir.display()
        ),
        Ok(n) => format!(
            "{n} saved drain rule(s) from {} applied; health is not known offline (--live)",
            state_dir.join(crate::policy::drains::FILE).display()
        ),
        Err(e) => format!("saved drains NOT applied: {e}"),
    };
    let req = crate::explain::Request {
        name,
        rtype,
        client,
        ecs,
        down,
        notes: vec![note],
    };
    match crate::explain::explain(&snap, &req) {
        Ok((text, value)) => {
            if json {
                outln!("{value}");
            } else {
                out!("{text}");
            }
            EXIT_OK
        }
        Err(e) => {
            errln!("meridian explain: {e}");
            EXIT_INVALID
        }
    }
}

fn check(path: &Path) -> i32 {
    match Snapshot::load(path) {
        Ok(s) => {
            for w in s.warnings() {
                errln!("{w}");
            }
            let records: usize = s.zones.zones.values().map(|z| z.record_count).sum();
            outln!(
                "{}: ok ({} zones, {} records, {} services)",
                path.display(),
                s.zones.zones.len(),
                records,
                s.config.config.service.len()
            );
            EXIT_OK
        }
        Err(problems) => {
            for p in &problems.0 {
                errln!("{p}");
            }
            EXIT_INVALID
        }
    }
}

/// Loads the snapshot, or prints every problem as `file:line:col: message` and returns `None`.
fn load_or_report(path: &Path) -> Option<Snapshot> {
    match Snapshot::load(path) {
        Ok(s) => Some(s),
        Err(problems) => {
            for p in &problems.0 {
                errln!("{p}");
            }
            None
        }
    }
}

/// The log goes to stderr in every format: stdout stays clean for modes that speak a protocol
/// on it. `json` is one flat object per event (`timestamp`, `level`, `message`, fields,
/// `target`), the shape of the query log's JSON lines.
fn init_logging(format: crate::querylog::Format) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MERIDIAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::querylog::Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        crate::querylog::Format::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

fn serve(path: &Path) -> i32 {
    // `[log] format` decides how everything is logged, so it is read before anything else;
    // a config that does not load is reported in full just below.
    let format = crate::config::load(path)
        .map(|c| crate::querylog::Settings::from_config(&c).format)
        .unwrap_or_default();
    init_logging(format);
    // A zone file that fails to load does not keep the others from being served (SPEC "Day
    // two"); anything else wrong with the config still refuses to start.
    let snap = match Snapshot::load_serving(
        path,
        Arc::new(crate::snapshot::HealthRegistry::default()),
        &snapshot::Tolerate::AnyZone,
    ) {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems.0 {
                errln!("{p}");
            }
            return EXIT_INVALID;
        }
    };
    for f in &snap.zones.failed {
        tracing::error!(
            zone = f.name(),
            "zone not loaded, its names get SERVFAIL until it is fixed and reloaded: {}",
            f.error.replace('\n', "; ")
        );
    }
    // Loading parsed the config twice (for the log format, then in full): its garbage goes.
    crate::reload::release_freed_heap();
    // Before anything answers: a drained endpoint must not be served after a restart.
    crate::snapshot::restore_drains_at_start(&snap);
    let settings = ListenSettings::from_config(&snap.config);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("meridian: cannot start runtime: {e}");
            return EXIT_RUNTIME;
        }
    };
    let config_path = path.to_path_buf();
    let code = rt.block_on(async move {
        // Signal handlers come before the listeners: a SIGHUP that arrived once queries were
        // answered but before they existed killed the server (bench/scale.sh hit it on every
        // 1M-record start). Signals that arrive while starting are acted on once started.
        let signals = Signals::install();
        let zones = snap.zones.zones.len();
        let generation = snap.generation;
        let shared = snapshot::shared(snap);
        // The query log (control floor) is handed to the listeners as a handle.
        let handle = match crate::querylog::QueryLog::start(shared.clone())
            .and_then(|log| server::start(shared.clone(), &settings, log.handle()))
        {
            Ok(h) => h,
            Err(e) => {
                errln!("meridian: {e}");
                return EXIT_RUNTIME;
            }
        };
        for a in &handle.addrs {
            tracing::info!(address = %a, "listening on UDP and TCP");
        }
        let reloader = Reloader::new(shared.clone(), config_path.clone());
        // The secondary zones' state: this server's, kept by its refresh tasks (started
        // below) and read by its admin API and metrics.
        let secondary_zones = crate::secondary::Secondaries::default();
        let admin_state = crate::admin::AdminState::from_config(reloader.clone()).map(|s| {
            crate::admin::AdminState {
                secondaries: secondary_zones.clone(),
                xdp: handle.xdp.clone(),
                ..s
            }
        });
        let admin = match admin_state {
            None => None,
            Some(state) => match crate::admin::start(state).await {
                // crate::admin::start logs "admin API listening" itself, once.
                Ok(h) => Some(h),
                Err(e) => {
                    errln!("meridian: {e}");
                    handle.shutdown().await;
                    return if e.kind() == std::io::ErrorKind::InvalidInput {
                        EXIT_INVALID
                    } else {
                        EXIT_RUNTIME
                    };
                }
            },
        };
        // [anycast]: withdrawn at start, announced after `rise` good self-checks.
        let anycast = match shared.load().config.anycast.clone() {
            None => None,
            Some(settings) => {
                match crate::anycast::start(shared.clone(), handle.addrs.clone(), settings) {
                    Ok(a) => {
                        reloader.control().anycast.set(a.clone());
                        Some(a)
                    }
                    Err(e) => {
                        errln!("meridian: {e}");
                        if let Some(a) = admin {
                            a.shutdown().await;
                        }
                        handle.shutdown().await;
                        return EXIT_RUNTIME;
                    }
                }
            }
        };
        // Probes run on their own thread at a lower CPU priority (crate::prober::ProberThread).
        let prober = match crate::prober::spawn_thread(
            shared.clone(),
            crate::prober::ProberOptions {
                observer: Some(Arc::new(crate::metrics::observe_probe)),
                meter: reloader.control().prober.clone(),
                ..Default::default()
            },
        ) {
            Ok(p) => p,
            Err(e) => {
                errln!("meridian: cannot start the prober: {e}");
                handle.shutdown().await;
                return EXIT_RUNTIME;
            }
        };
        // [fleet]: shares verdicts and drains through etcd; never on the query path.
        if let Some(f) = shared.load().config.fleet.clone() {
            crate::fleet::start(&reloader.control().fleet, shared.clone(), f);
        }
        // [[secondary]]: refresh tasks on the main runtime (transfers are I/O, not CPU).
        let secondaries = crate::secondary::start(reloader.clone(), secondary_zones);
        tracing::info!(zones, generation, config = %config_path.display(), "serving");
        // systemd (Type=notify): ready only now that every listener is bound and the first
        // snapshot answers; the watchdog vouches for the listeners from here on.
        crate::systemd::ready(&format!(
            "serving {zones} zones, generation {generation}, on {}",
            handle
                .addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        let watchdog = crate::systemd::Watchdog::from_env(handle.liveness.clone());
        wait_for_signals(signals, &reloader).await;
        // The member of the last reload's [fleet], if any.
        if let Some(f) = reloader.control().fleet.get() {
            f.shutdown().await;
        }
        if let Some(a) = &anycast {
            // The route goes first; answering stops shutdown_grace later.
            a.shutdown().await;
        }
        tracing::info!("shutting down");
        crate::systemd::stopping();
        // Listeners stop beating as they close; the manager no longer expects pings now.
        drop(watchdog);
        secondaries.shutdown();
        prober.shutdown();
        // DNS and admin stop side by side; each bounds its own wait (about 1.5 s) so that the
        // process is gone within the 2 s the SPEC allows after SIGTERM.
        let admin_down = async {
            if let Some(a) = admin {
                a.shutdown().await;
            }
        };
        tokio::join!(admin_down, handle.shutdown());
        tracing::info!("stopped");
        EXIT_OK
    });
    // A reload still building on a blocking thread must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// SIGTERM, SIGINT and SIGHUP, caught from the start of serving.
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => Signals(Some((t, i, h))),
            _ => Signals(None),
        }
    }
}

/// Runs until SIGTERM or SIGINT; SIGHUP reloads (the same reload as `POST /api/v1/reload`).
async fn wait_for_signals(signals: Signals, reloader: &Reloader) {
    let Some((mut term, mut int, mut hup)) = signals.0 else {
        // Without signal handlers, ctrl-c is still honoured.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                // The reloader logs the outcome and records it for /status and metrics.
                let _ = reloader.reload().await;
            }
        }
    }
}

/// `meridian dnssec ds --config PATH`: each signed zone's DS records (SHA-256) of its SEP
/// keys, one per line, as `dnssec-dsfromkey -2` prints them. Only `[[dnssec]]` is checked
/// here (`meridian check` checks the rest). Exit 0, or 1 with every problem on stderr.
fn dnssec_ds(config_path: &std::path::Path) -> i32 {
    let examined = crate::config::examine(config_path);
    let Some(lc) = examined.config else {
        for p in &examined.problems {
            errln!("{p}");
        }
        return EXIT_INVALID;
    };
    let mut problems = Vec::new();
    let zones = crate::dnssec::config::load(&lc.config.dnssec, &lc.cx(), &mut problems);
    if !problems.is_empty() {
        for p in &problems {
            errln!("{p}");
        }
        return EXIT_INVALID;
    }
    if zones.is_empty() {
        errln!(
            "{}: no [[dnssec]] section: no zone is signed",
            config_path.display()
        );
        return EXIT_INVALID;
    }
    for z in &zones {
        for k in z.sep_keys() {
            outln!("{}", k.ds_line());
        }
    }
    EXIT_OK
}

/// `meridian dnssec ...`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum DnssecCommand {
    /// Print each signed zone's DS records (SHA-256) of its SEP keys, for the parent zone.
    Ds {
        #[arg(long, default_value = "config/meridian.toml")]
        config: std::path::PathBuf,
    },
}

impl DnssecCommand {
    fn run(self) -> i32 {
        match self {
            DnssecCommand::Ds { config } => dnssec_ds(&config),
        }
    }
}
