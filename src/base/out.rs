//! The command line's output and exit codes, shared by every command (`cli`, `ctl`,
//! `simulate`, `manpage`): here, on the ground floor, so that the commands need not import
//! each other for them (they did, which made `cli ctl manpage simulate` a circle).

/// SPEC exit codes: success.
pub const EXIT_OK: i32 = 0;
/// SPEC exit codes: invalid input (config, zone, arguments).
pub const EXIT_INVALID: i32 = 1;
/// SPEC exit codes: a runtime failure (a socket, the server unreachable).
pub const EXIT_RUNTIME: i32 = 2;

/// Writes to stdout; a closed pipe (`meridian status | head -1`) ends the output quietly
/// instead of panicking as `println!` does, and the command keeps its own exit status.
pub fn write_out(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(args).and_then(|_| match newline {
        true => o.write_all(b"\n"),
        false => Ok(()),
    });
}

/// [`write_out`] for stderr.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|_| e.write_all(b"\n"));
}

/// `println!` that a closed stdout cannot turn into a panic.
macro_rules! outln {
    ($($t:tt)*) => { $crate::base::out::write_out(format_args!($($t)*), true) };
}
/// `print!` that a closed stdout cannot turn into a panic.
macro_rules! out {
    ($($t:tt)*) => { $crate::base::out::write_out(format_args!($($t)*), false) };
}
/// `eprintln!` that a closed stderr cannot turn into a panic.
macro_rules! errln {
    ($($t:tt)*) => { $crate::base::out::write_err(format_args!($($t)*)) };
}
pub(crate) use {errln, out, outln};
