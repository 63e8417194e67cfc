//! khactl's entry point: parse arguments, run the command, print its typed result (text for
//! people on stderr, or one JSON document on stdout), and funnel every error to one place that
//! prints it with its causes and hints and picks the exit code.

use std::process::ExitCode as ProcessExit;

use clap::Parser;
use khactl::cli::{Cli, Command, Output};
use khactl::cluster::health::ClusterHealth;
use khactl::commands::{
    ExitCode, UsageError, adopt_pki, failover_test, grow, remove_node, render, reset, status, up,
    validate,
};
use khactl::diagnostics::{Hinted, hints_of};
use khactl::interrupt::Interrupted;
use khactl::phases::{NodesFailed, RunInterrupted};
use khactl::remote::RemoteError;
use khactl::report;
use serde::Serialize;

fn main() -> ProcessExit {
    let cli = Cli::parse();
    let code = match run(&cli) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            let code = exit_code(&e);
            print_error(&cli, &e, code);
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
            let result =
                runtime.block_on(up::run(&args.options(), report::for_terminal(cli.verbose)))?;
            print_result(cli, "up", &result, &result.text(), Stream::Stderr)
        }
        Command::Validate(args) => {
            let result = validate::run(&args.inventory.inventory)?;
            print_result(cli, "validate", &result, &result.text(), Stream::Stdout)
        }
        Command::Render(args) => {
            let result = render::run(&args.options())?;
            print_result(cli, "render", &result, &result.text(), Stream::Stdout)
        }
        Command::AdoptPki(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let reporter = report::for_terminal(cli.verbose);
            let result = runtime.block_on(adopt_pki::run(&args.options(), reporter))?;
            print_result(cli, "adopt-pki", &result, &result.text(), Stream::Stderr)
        }
        Command::Status(args) => run_status(cli, args),
        Command::Reset(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let reporter = report::for_terminal(cli.verbose);
            let result = runtime.block_on(reset::run(&args.options(), reporter))?;
            print_result(cli, "reset", &result, &result.text(), Stream::Stderr)
        }
        Command::AddMaster(args) | Command::AddWorker(args) | Command::AddEtcd(args) => {
            let role = match &cli.command {
                Command::AddMaster(_) => khactl::inventory::Role::ControlPlane,
                Command::AddEtcd(_) => khactl::inventory::Role::Etcd,
                _ => khactl::inventory::Role::Worker,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let reporter = report::for_terminal(cli.verbose);
            let result = runtime.block_on(grow::run(&args.options(role), reporter))?;
            print_result(
                cli,
                command_name(&cli.command),
                &result,
                &result.text(),
                Stream::Stderr,
            )
        }
        Command::RemoveNode(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let reporter = report::for_terminal(cli.verbose);
            let result = runtime.block_on(remove_node::run(&args.options(), reporter))?;
            print_result(cli, "remove-node", &result, &result.text(), Stream::Stderr)
        }
        Command::FailoverTest(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let reporter = report::for_terminal(cli.verbose);
            let result = runtime.block_on(failover_test::run(&args.options(), reporter))?;
            print_result(
                cli,
                "failover-test",
                &result,
                &result.text(),
                Stream::Stderr,
            )?;
            // Every figure is printed; then a missed target fails the run, naming it.
            let missed = result.missed();
            if missed.is_empty() {
                Ok(())
            } else {
                Err(failover_test::TargetsMissed { missed }.into())
            }
        }
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Up(_) => "up",
        Command::Validate(_) => "validate",
        Command::Render(_) => "render",
        Command::AdoptPki(_) => "adopt-pki",
        Command::AddMaster(_) => "add-master",
        Command::AddWorker(_) => "add-worker",
        Command::AddEtcd(_) => "add-etcd",
        Command::FailoverTest(_) => "failover-test",
        Command::RemoveNode(_) => "remove-node",
        Command::Status(_) => "status",
        Command::Reset(_) => "reset",
    }
}

/// `status`: the view on stdout (redrawn with `--watch`), then exit 1 if degraded. A degraded
/// cluster's JSON document carries both the result and the error.
fn run_status(cli: &Cli, args: &khactl::cli::StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opts = args.options();
    let watching = opts.watch.is_some();
    let (reporter, on_round): (Box<dyn report::Reporter>, Option<khactl::phases::OnRound>) =
        if watching {
            let output = cli.output;
            (
                Box::new(report::SilentReporter),
                Some(Box::new(move |h: &ClusterHealth| draw_round(output, h))),
            )
        } else {
            (report::for_terminal(cli.verbose), None)
        };
    let result = runtime.block_on(status::run(&opts, reporter, on_round))?;
    let degraded = result.degraded();
    if !watching {
        match (&degraded, cli.output) {
            (Some(e), Output::Json) => {
                let doc = Document {
                    command: "status",
                    ok: false,
                    result: Some(&result),
                    error: Some(ErrorDocument {
                        message: e.to_string(),
                        causes: Vec::new(),
                        hints: e.hints().to_vec(),
                        exit_code: ExitCode::Failed as u8,
                    }),
                };
                print_json(&doc)?;
            }
            _ => print_result(cli, "status", &result, &result.text(), Stream::Stdout)?,
        }
    }
    match degraded {
        Some(_) => Err(Printed(format!(
            "cluster {} is degraded: {} problem(s), listed above",
            result.health.cluster,
            result.health.problems.len()
        ))
        .into()),
        None => Ok(()),
    }
}

/// An error whose details the command printed already (`status` on a degraded cluster): one
/// line on stderr, no second JSON document.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Printed(String);

#[expect(clippy::print_stdout, reason = "main prints the command's result")]
fn print_json<T: Serialize>(doc: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(doc)?);
    Ok(())
}

/// One look of `status --watch`: the view redrawn in place on a terminal, or one JSON line.
#[expect(clippy::print_stdout, reason = "main prints the command's result")]
fn draw_round(output: Output, health: &ClusterHealth) {
    use std::io::IsTerminal;
    match output {
        Output::Json => match serde_json::to_string(health) {
            Ok(line) => println!("{line}"),
            Err(e) => println!("{{\"error\":\"cannot print the status as JSON: {e}\"}}"),
        },
        Output::Text => {
            if std::io::stdout().is_terminal() {
                // Home, then clear to the end of the screen: the view is redrawn in place.
                print!("\x1b[H\x1b[2J");
            }
            for line in health.text() {
                println!("{line}");
            }
            println!("(every look is read again; Ctrl-C to stop)");
        }
    }
}

fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.chain()
        .any(|c| c.is::<RunInterrupted>() || c.is::<Interrupted>())
    {
        ExitCode::Interrupted
    } else if e.chain().any(|c| c.is::<Printed>()) {
        ExitCode::Failed
    } else if e.chain().any(|c| c.is::<UsageError>()) {
        ExitCode::Usage
    } else {
        ExitCode::Failed
    }
}

enum Stream {
    Stdout,
    Stderr,
}

/// The JSON document of `--output json`, success or failure alike (docs/output.md).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a, T: Serialize> {
    command: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDocument>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDocument {
    message: String,
    causes: Vec<String>,
    hints: Vec<String>,
    exit_code: u8,
}

#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "main prints the command's result"
)]
fn print_result<T: Serialize>(
    cli: &Cli,
    command: &str,
    result: &T,
    text: &[String],
    stream: Stream,
) -> anyhow::Result<()> {
    match cli.output {
        Output::Json => {
            let doc = Document {
                command,
                ok: true,
                result: Some(result),
                error: None,
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => {
            for line in text {
                match stream {
                    Stream::Stdout => println!("{line}"),
                    Stream::Stderr => eprintln!("{line}"),
                }
            }
        }
    }
    Ok(())
}

/// Every hint along the chain: data on the errors, never text searched for in messages.
fn hints(e: &anyhow::Error) -> Vec<String> {
    fn of(cause: &(dyn std::error::Error + 'static)) -> Vec<String> {
        if let Some(u) = cause.downcast_ref::<UsageError>() {
            return u.hints().to_vec();
        }
        if let Some(r) = cause.downcast_ref::<RemoteError>() {
            return r.hint().into_iter().collect();
        }
        if let Some(f) = cause.downcast_ref::<NodesFailed>() {
            return f
                .failures
                .iter()
                .flat_map(|(_, e)| hints_of(e, of))
                .collect();
        }
        if let Some(h) = cause.downcast_ref::<Hinted>() {
            return h.hints().to_vec();
        }
        if cause.is::<RunInterrupted>() {
            return vec![
                "no node was left half-way through a step; run the same command again to \
                 finish the job"
                    .to_owned(),
            ];
        }
        Vec::new()
    }
    hints_of(e, of)
}

#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the one place errors are printed"
)]
fn print_error(cli: &Cli, e: &anyhow::Error, code: ExitCode) {
    let hints = hints(e);
    eprintln!("error: {e}");
    if e.is::<Printed>() {
        return;
    }
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    for hint in &hints {
        eprintln!("  hint: {hint}");
    }
    // A drill that missed targets printed its whole result already (with `passed: false`);
    // one JSON document on stdout, so no second one for the error.
    let result_printed = e.chain().any(|c| c.is::<failover_test::TargetsMissed>());
    if cli.output == Output::Json && !result_printed {
        let command = command_name(&cli.command);
        let doc: Document<'_, ()> = Document {
            command,
            ok: false,
            result: None,
            error: Some(ErrorDocument {
                message: e.to_string(),
                causes: e.chain().skip(1).map(ToString::to_string).collect(),
                hints,
                exit_code: code as u8,
            }),
        };
        match serde_json::to_string_pretty(&doc) {
            Ok(json) => println!("{json}"),
            Err(err) => eprintln!("error: cannot print the error as JSON: {err}"),
        }
    }
}
