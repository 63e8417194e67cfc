//! What bad input may cost: validation is linear in the size of the file and the number of
//! problems, and the file itself is bounded in size and must be a regular file. The bounds
//! are generous for a debug build on a slow machine, yet each one fails by an order of
//! magnitude with the quadratic code it guards against (the issue measured 9 s to 20 s).

use std::time::Duration;

use super::*;

const HEAD: &str = "\
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: t, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: cp2, address: 10.0.0.12, role: control-plane }
  - { name: cp3, address: 10.0.0.13, role: control-plane }
sysctls:
";

/// One second in a release build, the promise; a debug build of this crate runs the same
/// code about four times slower (unoptimised hashing and bounds checks), so it gets four.
/// The quadratic code this replaced took about a minute for the same input.
fn one_second() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(4)
    } else {
        Duration::from_secs(1)
    }
}

/// The CPU time `f` took on this thread: unlike wall time, it does not grow when other tests
/// or builds share the machine's two cores.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = thread_cpu();
    let value = f();
    (value, thread_cpu().saturating_sub(started))
}

/// utime + stime of this thread from /proc (in USER_HZ ticks, 100 per second on Linux).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The command name may hold spaces; the fields after it start with the state (field 3).
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

#[test]
fn a_megabyte_with_ten_thousand_problems_is_answered_in_under_a_second() {
    // Each line a bad sysctl name padded to ~100 bytes: 10,000 lines, about 1 MB.
    let pad = "x".repeat(80);
    let mut text = HEAD.to_owned();
    for i in 0..10_000 {
        text.push_str(&format!("  bad key {i:05} {pad}: 1\n"));
    }
    assert!(text.len() > 1_000_000, "{}", text.len());
    let (result, took) = timed(|| parse(&text));
    let problems = match result {
        Err(InventoryError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    };
    assert_eq!(problems.len(), 10_000);
    // Every problem is located, on its own line.
    assert_eq!(problems[0].line, Some(10));
    assert_eq!(problems[9_999].line, Some(10_009));
    assert!(took < one_second(), "took {took:?}");
}

#[test]
fn a_hundred_thousand_sysctls_validate_in_linear_time() {
    let mut text = HEAD.to_owned();
    for i in 0..100_000 {
        text.push_str(&format!("  net.ipv4.k{i}: 1\n"));
    }
    let (result, took) = timed(|| parse(&text));
    assert_eq!(result.unwrap().inventory.sysctls.len(), 100_000);
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn the_same_key_four_thousand_times_is_reported_each_time_without_quadratic_cost() {
    // Keys that YAML keeps apart (the number 7 and the string "7") but that are the same
    // text: each pair is caught by the dedup check.
    let mut text = HEAD.to_owned();
    for i in 0..4_000 {
        text.push_str(&format!("  {i}: 1\n  \"{i}\": 1\n"));
    }
    let (result, took) = timed(|| parse(&text));
    let problems = problems_of(result);
    let twice = problems
        .iter()
        .filter(|p| p.message.contains("appears twice"))
        .count();
    assert_eq!(twice, 4_000);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn two_hundred_thousand_unclosed_brackets_are_refused_at_once_with_their_line() {
    let text = format!("{HEAD}  a: {}\n", "[".repeat(200_000));
    let (result, took) = timed(|| parse(&text));
    let problems = problems_of(result);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].line, Some(10));
    assert!(
        problems[0].message.contains("nest more than"),
        "{problems:?}"
    );
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[test]
fn brackets_that_open_nothing_are_not_counted() {
    // Inside plain text, quotes and comments, and balanced flow collections: all valid.
    let mut text = HEAD.to_owned();
    for i in 0..200 {
        text.push_str(&format!(
            "  net.ipv4.p{i}: a[b{{c  # [[[{{\n  net.ipv4.q{i}: \"[[{{\\\"[\"\n  net.ipv4.r{i}: '[''['\n"
        ));
    }
    text.push_str("kubeadm: { apiServerExtraArgs: { a: \"[\" } }\n");
    let validated = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(validated.inventory.sysctls.len(), 600);
}

#[test]
fn the_inventory_must_be_a_regular_file_of_at_most_four_mebibytes() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let mut text = HEAD.to_owned();
    text.push_str(&"# padding\n".repeat(MAX_INVENTORY_BYTES as usize / 10 + 1));
    std::fs::write(&big, &text).unwrap();
    let err = load(&big).unwrap_err().to_string();
    assert!(err.contains("over the limit of 4 MiB"), "{err}");

    // /dev/zero would feed a reader gigabytes in a second.
    let err = load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(err.contains("is a device, not a regular file"), "{err}");

    // A FIFO with no writer would block a plain open forever.
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let err = load(&fifo).unwrap_err().to_string();
    assert!(err.contains("named pipe (FIFO)"), "{err}");

    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
}
