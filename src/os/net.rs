//! Network checks run from a node with the tools it has.

use crate::remote::RemoteCommand;

/// Opens a TCP connection to `$1:$2` with what the node has: `bash`'s `/dev/tcp` (Debian,
/// Ubuntu, RHEL), else `nc -z` (Alpine's BusyBox); exit 127 when it has neither.
pub(crate) const TCP_CONNECT: &str = r#"if command -v bash >/dev/null 2>&1; then
  exec timeout 2 bash -c 'exec 3<>/dev/tcp/$0/$1' "$1" "$2"
elif command -v nc >/dev/null 2>&1; then
  exec nc -z -w 2 "$1" "$2"
fi
exit 127
"#;

/// The exit status of [`tcp_connect`] on a node with neither bash nor nc.
pub const NO_TCP_TOOL: i32 = 127;

/// A read-only command that succeeds when `address:port` accepts a TCP connection from the
/// node within 2 s.
pub fn tcp_connect(address: &str, port: u16) -> RemoteCommand {
    RemoteCommand::script(
        "tcp-connect",
        TCP_CONNECT,
        [address.to_owned(), port.to_string()],
    )
    .read_only()
}

/// What to install when a node cannot test a connection.
pub fn tcp_tool_hint() -> &'static str {
    "it needs bash (with timeout) or nc; install one of them (Alpine: apk add bash) and run again"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the connection test as the node would, here on loopback, with `path` as PATH.
    fn run(port: u16, path: &str) -> Option<i32> {
        std::process::Command::new("/bin/sh")
            .args([
                "-c",
                TCP_CONNECT,
                "tcp-connect",
                "127.0.0.1",
                &port.to_string(),
            ])
            .env("PATH", path)
            .status()
            .unwrap()
            .code()
    }

    #[test]
    fn the_connection_test_tells_an_open_port_from_a_closed_one_and_missing_tools() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(run(open, &path), Some(0));
        assert_ne!(run(closed, &path), Some(0));
        assert_eq!(
            run(open, "/nonexistent"),
            Some(NO_TCP_TOOL),
            "neither bash nor nc"
        );
    }
}
