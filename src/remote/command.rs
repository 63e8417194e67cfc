//! Remote commands as data: argv, optional stdin, a timeout, and whether the stdin is
//! secret. Shell is used only as `sh -c CONSTANT_SCRIPT name ARGS…`, where the script
//! is a constant of this program and every value arrives as a positional argument.

use std::fmt;
use std::time::Duration;

/// What a secret is replaced by wherever it would be shown.
pub const REDACTED: &str = "<redacted>";

/// Default per-command timeout; long steps (package installs, kubeadm) set their own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct RemoteCommand {
    pub(crate) argv: Vec<String>,
    pub(crate) stdin: Option<Vec<u8>>,
    pub(crate) stdin_is_secret: bool,
    pub(crate) timeout: Duration,
    /// Set for commands that only read: allowed in plan mode.
    pub(crate) read_only: bool,
    /// The command prints a secret on stdout (a join token): stdout is never logged or shown.
    pub(crate) secret_stdout: bool,
    /// Secrets this command may echo (a token it was given in a file): blanked wherever its
    /// output is logged or shown.
    pub(crate) redact: Vec<String>,
    /// Output lines holding one of these are blanked whole where logged or shown.
    pub(crate) redact_lines: Vec<String>,
}

impl RemoteCommand {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            stdin: None,
            stdin_is_secret: false,
            timeout: DEFAULT_TIMEOUT,
            read_only: false,
            secret_stdout: false,
            redact: Vec::new(),
            redact_lines: Vec::new(),
        }
    }

    /// `sh -c SCRIPT NAME ARGS…`: `script` must be a constant; values go in `args`.
    pub fn script<I, S>(name: &str, script: &'static str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
            name.to_owned(),
        ];
        argv.extend(args.into_iter().map(Into::into));
        Self::new(argv)
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Stdin that must never be logged (keys, tokens).
    pub fn secret_stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self.stdin_is_secret = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Marks stdout as secret: it is returned to the caller but never logged or shown.
    pub fn secret_stdout(mut self) -> Self {
        self.secret_stdout = true;
        self
    }

    /// Blanks `secret` wherever this command's output is logged or shown.
    pub fn redacting(mut self, secret: impl Into<String>) -> Self {
        let secret = secret.into();
        if !secret.is_empty() {
            self.redact.push(secret);
        }
        self
    }

    /// Blanks every output line that holds `needle` (say a digest line naming a password
    /// file: a hash of a chosen password can be cracked offline).
    pub fn redacting_lines_containing(mut self, needle: impl Into<String>) -> Self {
        let needle = needle.into();
        if !needle.is_empty() {
            self.redact_lines.push(needle);
        }
        self
    }

    /// The output as it may be logged or shown: a secret stdout dropped, known secrets
    /// blanked in the rest.
    pub fn visible_output(&self, out: &CommandOutput) -> CommandOutput {
        let blank = |bytes: &[u8]| -> Vec<u8> {
            let mut text = String::from_utf8_lossy(bytes).into_owned();
            for s in &self.redact {
                text = text.replace(s.as_str(), REDACTED);
            }
            if !self.redact_lines.is_empty() {
                text = text
                    .split_inclusive('\n')
                    .map(|line| {
                        if self.redact_lines.iter().any(|n| line.contains(n.as_str())) {
                            if line.ends_with('\n') {
                                format!("{REDACTED}\n")
                            } else {
                                REDACTED.to_owned()
                            }
                        } else {
                            line.to_owned()
                        }
                    })
                    .collect();
            }
            text.into_bytes()
        };
        CommandOutput {
            status: out.status,
            stdout: if self.secret_stdout {
                format!("[secret output redacted: {} bytes]\n", out.stdout.len()).into_bytes()
            } else {
                blank(&out.stdout)
            },
            stderr: blank(&out.stderr),
        }
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// A short human label: the program, or the script's name for `sh -c` commands.
    pub fn label(&self) -> String {
        match self.argv.as_slice() {
            [sh, c, _script, name, rest @ ..] if sh == "sh" && c == "-c" => {
                let mut s = name.clone();
                for a in rest {
                    s.push(' ');
                    s.push_str(&quote(a));
                }
                s
            }
            _ => self.to_string(),
        }
    }
}

/// Shows the command the way a user could paste it; a secret stdin shows as a marker.
impl fmt::Display for RemoteCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for a in &self.argv {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(&quote(a))?;
        }
        match (&self.stdin, self.stdin_is_secret) {
            (Some(_), true) => f.write_str(" <<< [secret redacted]"),
            (Some(d), false) => write!(f, " <<< [{} bytes]", d.len()),
            (None, _) => Ok(()),
        }
    }
}

impl fmt::Debug for RemoteCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b));
    if plain {
        arg.to_owned()
    } else if arg.contains('\n') {
        // Scripts: show that one is there, not its text.
        "'<script>'".to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// What a finished remote command produced.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The last `n` lines of stderr, else stdout: what a user needs to see of a failure.
    pub fn tail(&self, n: usize) -> String {
        let text = if self.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            self.stderr_str()
        } else {
            self.stdout_str()
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_arguments_that_need_it() {
        let c = RemoteCommand::new(["sysctl", "-w", "net.ipv4.ip_forward=1", "a b"]);
        assert_eq!(c.to_string(), "sysctl -w net.ipv4.ip_forward=1 'a b'");
    }

    #[test]
    fn lines_naming_a_secret_file_are_blanked_whole() {
        let cmd = RemoteCommand::new(["probe"]).redacting_lines_containing("/etc/k/pw");
        let out = CommandOutput {
            status: Some(0),
            stdout: b"sum 5e88  /etc/k/pw\nsum 1234  /etc/k/config\n".to_vec(),
            stderr: Vec::new(),
        };
        let shown = cmd.visible_output(&out);
        assert_eq!(shown.stdout, b"<redacted>\nsum 1234  /etc/k/config\n");
    }

    #[test]
    fn secret_stdin_is_redacted() {
        let c = RemoteCommand::new(["tee", "/etc/k"]).secret_stdin("TOKEN-abc");
        let shown = c.to_string();
        assert!(!shown.contains("TOKEN"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn visible_output_drops_a_secret_stdout_and_blanks_known_secrets() {
        let out = CommandOutput {
            status: Some(0),
            stdout: b"kubeadm join --token abcdef.0123456789abcdef\n".to_vec(),
            stderr: b"using token abcdef.0123456789abcdef\n".to_vec(),
        };
        let cmd = RemoteCommand::new(["kubeadm", "init"]).redacting("abcdef.0123456789abcdef");
        let shown = cmd.visible_output(&out);
        assert_eq!(shown.stdout_str(), "kubeadm join --token <redacted>\n");
        assert_eq!(shown.stderr_str(), "using token <redacted>\n");
        let secret = RemoteCommand::new(["kubeadm", "token", "create"]).secret_stdout();
        let shown = secret.visible_output(&out);
        assert!(
            !shown.stdout_str().contains("abcdef"),
            "{}",
            shown.stdout_str()
        );
        assert!(shown.stdout_str().contains("redacted"));
    }

    #[test]
    fn script_label_shows_name_and_values_not_the_script() {
        let c = RemoteCommand::script("write-file", "set -e\ncat >\"$1\"\n", ["/etc/x y"]);
        assert_eq!(c.label(), "write-file '/etc/x y'");
        assert!(c.to_string().contains("'<script>'"));
    }
}
