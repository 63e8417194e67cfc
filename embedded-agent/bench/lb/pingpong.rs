//! Latency and idle-connection tools for bench/lb (std only; built by bench.py with `rustc -O`).
//!
//!   pingpong server ADDR            echo server, one thread per connection
//!   pingpong client ADDR N SIZE     N round trips of SIZE bytes on one connection; prints
//!                                   `p50_us p90_us p99_us`
//!   pingpong hold ADDR COUNT        opens COUNT connections, sends the start of an HTTP
//!                                   request on each (so each has carried data, like a watch
//!                                   that went quiet, and the backend waits for the rest),
//!                                   prints `ready`, holds them until stdin closes

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    match arg(1).as_str() {
        "server" => server(&arg(2)),
        "client" => client(&arg(2), num(&arg(3)), num(&arg(4))),
        "hold" => hold(&arg(2), num(&arg(3))),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: pingpong server ADDR | client ADDR N SIZE | hold ADDR COUNT");
    std::process::exit(2)
}

fn num(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| usage())
}

fn server(addr: &str) {
    let listener = TcpListener::bind(addr).expect("bind");
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

fn client(addr: &str, n: usize, size: usize) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let msg = vec![b'x'; size];
    let mut back = vec![0u8; size];
    // Warm-up: the first round trips pay for page faults and cache misses.
    for _ in 0..200 {
        s.write_all(&msg).expect("write");
        s.read_exact(&mut back).expect("read");
    }
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&msg).expect("write");
        s.read_exact(&mut back).expect("read");
        rtts.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
    println!("{:.1} {:.1} {:.1}", q(0.5), q(0.9), q(0.99));
}

fn hold(addr: &str, count: usize) {
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /t HTTP/1.1\r\nHost: bench\r\n")
            .expect("write");
        conns.push(s);
    }
    println!("ready");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(conns);
}
