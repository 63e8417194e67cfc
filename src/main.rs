//! khactl's entry point: parse arguments, run the command, and funnel every error to
//! one place that prints it with its causes and hints and picks the exit code.

use std::process::ExitCode as ProcessExit;

use clap::Parser;
use khactl::cli::{Cli, Command};
use khactl::commands::{ExitCode, UsageError, up};
use khactl::remote::RemoteError;
use khactl::{inventory, report};

fn main() -> ProcessExit {
    let cli = Cli::parse();
    let code = match run(&cli) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            let code = if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::Usage
            } else {
                ExitCode::Failed
            };
            print_error(&e);
            code
        }
    };
    ProcessExit::from(code as u8)
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Up(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(up::run(&args.options(), report::for_terminal(cli.verbose)))
        }
        Command::Validate(args) => validate(&args.inventory.inventory),
    }
}

#[expect(clippy::print_stdout, reason = "main prints the command's result")]
fn validate(path: &std::path::Path) -> anyhow::Result<()> {
    let v = inventory::load(path).map_err(|e| UsageError(e.to_string()))?;
    for w in &v.warnings {
        println!("warning: {w}");
    }
    let inv = &v.inventory;
    println!(
        "{}: valid: cluster {}, {} control-plane and {} worker node(s), API endpoint {}:{}",
        path.display(),
        inv.cluster.name,
        inv.control_plane().count(),
        inv.workers().count(),
        inv.vip
            .dns_name
            .as_ref()
            .map_or_else(|| inv.vip.address.to_string(), |d| d.to_string()),
        inv.vip.port
    );
    Ok(())
}

#[expect(clippy::print_stderr, reason = "the one place errors are printed")]
fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    // A node lost mid-run (not at Connect, which words its own hints) still says what to do.
    let said = e.chain().any(|c| c.to_string().contains("hint:"));
    let hint = e
        .chain()
        .find_map(|c| c.downcast_ref::<RemoteError>())
        .and_then(RemoteError::hint);
    if let Some(hint) = hint.filter(|_| !said) {
        eprintln!("  hint: {hint}");
    }
}
