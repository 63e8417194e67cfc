//! The floor of a new connection's cost for a one-thread L4 proxy on Linux, for bench/lb's
//! connection test only (std only, raw syscalls; built by bench.py with `rustc -O`).
//!
//!   floor LISTEN_PORT BACKEND_PORT [SPIN_US]
//!
//! forwards 127.0.0.1:LISTEN_PORT to 127.0.0.1:BACKEND_PORT. With SPIN_US > 0 it busy-polls
//! (`epoll_wait` with a zero timeout) for up to SPIN_US µs before it blocks, as haproxy's
//! `busy-polling` does: a way to test whether the proxy's sleeps and wake-ups, not its work,
//! hold the connection rate down.
//!
//! One epoll loop, no runtime, no timers, no health checks, no counters, and the fewest
//! syscalls a proxy needs: accept4, socket, two setsockopt, connect, two epoll_ctl ADD, recv
//! and send per message, shutdown or close. It uses the same socket options as khagent
//! (TCP_DEFER_ACCEPT, TCP_NODELAY, TCP_QUICKACK off toward the backend). It is not a usable
//! proxy: a send that the destination does not take whole loses bytes, so it can only measure
//! short request/answer connections (`wrk -H 'Connection: close'`). If khagent costs what this
//! costs per connection, no user-space change to khagent can lower it further.

use std::collections::HashMap;

mod ffi;
use ffi::*;

fn set(fd: i32, level: i32, name: i32, value: i32) {
    unsafe { setsockopt(fd, level, name, &value, 4) };
}

/// One side of a proxied connection: the socket it forwards to, and whether it reached EOF.
struct Side {
    peer: i32,
    eof: bool,
}

fn main() {
    let args: Vec<u16> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: floor LISTEN_PORT BACKEND_PORT [SPIN_US]"))
        .collect();
    let (listen_port, backend_port) = (args[0], args[1]);
    let spin = std::time::Duration::from_micros(args.get(2).copied().unwrap_or(0).into());
    unsafe {
        let l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        set(l, SOL_SOCKET, SO_REUSEADDR, 1);
        // Several floors can share the port (the kernel spreads connections over them): how
        // bench/lb/cluster.py measures whether a second proxy thread pays on this machine.
        set(l, SOL_SOCKET, SO_REUSEPORT, 1);
        set(l, IPPROTO_TCP, TCP_NODELAY, 1);
        set(l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 1);
        let addr = loopback(listen_port);
        assert!(bind(l, &addr, 16) == 0, "bind 127.0.0.1:{listen_port}");
        listen(l, 4096);
        let ep = epoll_create1(0);
        let mut ev = EpollEvent {
            events: EPOLLIN,
            data: l as u64,
        };
        epoll_ctl(ep, EPOLL_CTL_ADD, l, &mut ev);
        let backend = loopback(backend_port);
        let mut sides: HashMap<i32, Side> = HashMap::new();
        let mut events = vec![EpollEvent { events: 0, data: 0 }; 256];
        let mut buf = vec![0u8; 16384];
        loop {
            let mut n = 0;
            if !spin.is_zero() {
                let start = std::time::Instant::now();
                while n == 0 && start.elapsed() < spin {
                    n = epoll_wait(ep, events.as_mut_ptr(), 256, 0);
                }
            }
            if n == 0 {
                n = epoll_wait(ep, events.as_mut_ptr(), 256, -1);
            }
            for e in &events[..n.max(0) as usize] {
                let (fd, what) = (e.data as i32, e.events);
                if fd == l {
                    loop {
                        let c = accept4(l, std::ptr::null_mut(), std::ptr::null_mut(), SOCK_NONBLOCK);
                        if c < 0 {
                            break;
                        }
                        let s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
                        set(s, IPPROTO_TCP, TCP_NODELAY, 1);
                        set(s, IPPROTO_TCP, TCP_QUICKACK, 0);
                        connect(s, &backend, 16);
                        let mut ec = EpollEvent {
                            events: EPOLLIN | EPOLLRDHUP | EPOLLET,
                            data: c as u64,
                        };
                        epoll_ctl(ep, EPOLL_CTL_ADD, c, &mut ec);
                        let mut es = EpollEvent {
                            events: EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                            data: s as u64,
                        };
                        epoll_ctl(ep, EPOLL_CTL_ADD, s, &mut es);
                        sides.insert(c, Side { peer: s, eof: false });
                        sides.insert(s, Side { peer: c, eof: false });
                    }
                    continue;
                }
                let Some(peer) = sides.get(&fd).map(|s| s.peer) else {
                    continue;
                };
                // The backend became writable (connected): the client's request, which
                // deferred accept guarantees is there, can go now.
                let sources = if what & EPOLLOUT != 0 { [peer, fd] } else { [fd, -1] };
                for src in sources {
                    let Some(side) = sides.get(&src) else { continue };
                    if side.eof {
                        continue;
                    }
                    let dst = side.peer;
                    loop {
                        let r = recv(src, buf.as_mut_ptr(), buf.len(), 0);
                        if r > 0 {
                            send(dst, buf.as_ptr(), r as usize, MSG_NOSIGNAL);
                            if (r as usize) < buf.len() {
                                break;
                            }
                        } else if r == 0 {
                            if let Some(s) = sides.get_mut(&src) {
                                s.eof = true;
                            }
                            if sides.get(&dst).is_none_or(|s| s.eof) {
                                sides.remove(&src);
                                sides.remove(&dst);
                                close(src);
                                close(dst);
                            } else {
                                shutdown(dst, SHUT_WR);
                            }
                            break;
                        } else {
                            break;
                        }
                    }
                }
            }
        }
    }
}
