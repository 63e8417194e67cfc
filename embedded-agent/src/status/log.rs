//! Log lines: one line per event on stderr, `khagent: LEVEL message`. systemd's journal adds
//! timestamps and the unit name, so neither is repeated here. Writing goes through
//! `std::io::Write` on a locked stderr so lines from the LB and VRRP threads never interleave.

use std::fmt::Arguments;
use std::io::Write;

fn emit(level: &str, args: Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    // A closed stderr must not take the daemon down; there is nowhere else to report it.
    let _ignored = writeln!(err, "khagent: {level} {args}");
}

pub fn info(args: Arguments<'_>) {
    emit("info", args);
}

pub fn warn(args: Arguments<'_>) {
    emit("warn", args);
}

pub fn error(args: Arguments<'_>) {
    emit("error", args);
}
