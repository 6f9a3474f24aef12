//! `meridian man`: man pages generated from the clap definitions, so they can never disagree
//! with `--help`. A hidden subcommand rather than a build script: a build.rs would run on every
//! build, and only packaging needs the pages (.ci/run writes them before `cargo deb`).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::base::out::{EXIT_INVALID, EXIT_OK, EXIT_RUNTIME};

/// What `--help` leaves to the man page, as roff sections after the generated ones.
const EXTRA: &str = r#".SH "EXIT STATUS"
0 ok; 1 invalid input (config, zone, arguments); 2 runtime failure (e.g. cannot bind).
.SH SIGNALS
.TP
.B SIGHUP
\fBserve\fR re-reads config, zones and GeoIP database; an invalid new config is rejected whole
and the old one keeps serving.
.TP
.BR SIGTERM ", " SIGINT
\fBserve\fR stops accepting, answers what it has received and exits 0.
.SH ENVIRONMENT
.TP
.B MERIDIAN_LOG
log level or filter (e.g. \fBdebug\fR); logs go to standard error.
.TP
.B MERIDIAN_TOKEN
the admin token the control commands (\fBdrain\fR, \fBundrain\fR, \fBreload\fR) send when
\fB--token\fR is not given; else the \fBadmin.token\fR of the config they read.
.TP
.B MERIDIAN_ADMIN
the admin API the control commands talk to (e.g. \fB127.0.0.1:9053\fR) when neither
\fB--admin\fR nor \fB--config\fR is given.
.TP
.B MERIDIAN_CONFIG
the config the control commands and offline \fBexplain\fR read when no \fB--config\fR,
\fB--admin\fR or \fBMERIDIAN_ADMIN\fR is given; without it, \fIconfig/meridian.toml\fR,
then \fI/etc/meridian/meridian.toml\fR.
.TP
.BR NOTIFY_SOCKET ", " WATCHDOG_USEC
set by systemd for \fBType=notify\fR: readiness, reload and stop notifications, and watchdog
pings while every DNS listener is running.
.SH FILES
.TP
.I /etc/meridian/meridian.toml
the packaged config (the default \fB--config\fR is \fIconfig/meridian.toml\fR in the current
folder); relative paths inside a config resolve against the config file's own folder.
.TP
.I /etc/meridian/zones/
the packaged zones folder: one RFC 1035 master file per zone, \fIORIGIN.zone\fR.
.TP
.I /usr/share/doc/meridian/
configuration reference, operations and running guides.
.SH "SEE ALSO"
.BR systemctl (1),
.BR dig (1)
"#;

/// Writes meridian.1 to stdout, or meridian.1 and one page per subcommand into `out`.
pub fn write(cmd: clap::Command, out: Option<PathBuf>) -> i32 {
    let result = match &out {
        None => render_main(cmd.clone(), &mut std::io::stdout().lock()),
        Some(dir) => write_all(cmd, dir),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let to = out.map_or("stdout".to_string(), |d| d.display().to_string());
            crate::base::out::errln!("meridian man: cannot write to {to}: {e}");
            if e.kind() == std::io::ErrorKind::NotFound {
                EXIT_INVALID
            } else {
                EXIT_RUNTIME
            }
        }
    }
}

fn render_main(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    // clap's `help` subcommand is not a page of its own: no meridian-help(1) to list.
    let cmd = cmd.disable_help_subcommand(true);
    clap_mangen::Man::new(cmd).render(w)?;
    w.write_all(EXTRA.as_bytes())
}

fn write_all(mut cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Built, so that each subcommand's page is titled `meridian-NAME` as SEE ALSO refers to it.
    cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        clap_mangen::Man::new(sub.clone()).generate_to(dir)?;
    }
    let mut f = std::fs::File::create(dir.join("meridian.1"))?;
    render_main(cmd, &mut f)?;
    f.flush()
}
