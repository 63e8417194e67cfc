//! The libc declarations bench/lb's standalone programs share (floor.rs, cluster.rs): each is
//! built alone with `rustc -O`, std only, so they declare what they call themselves; `mod ffi;`
//! finds this file beside them.
#![allow(dead_code)]

pub const AF_INET: i32 = 2;
pub const SOCK_STREAM: i32 = 1;
pub const SOCK_NONBLOCK: i32 = 0o4000;
pub const SOL_SOCKET: i32 = 1;
pub const SO_REUSEADDR: i32 = 2;
pub const SO_REUSEPORT: i32 = 15;
pub const IPPROTO_TCP: i32 = 6;
pub const TCP_NODELAY: i32 = 1;
pub const TCP_DEFER_ACCEPT: i32 = 9;
pub const TCP_QUICKACK: i32 = 12;
pub const EPOLL_CTL_ADD: i32 = 1;
pub const EPOLL_CTL_MOD: i32 = 3;
pub const EPOLLIN: u32 = 0x1;
pub const EPOLLOUT: u32 = 0x4;
pub const EPOLLRDHUP: u32 = 0x2000;
pub const EPOLLET: u32 = 1 << 31;
pub const MSG_DONTWAIT: i32 = 0x40;
pub const MSG_NOSIGNAL: i32 = 0x4000;
pub const SHUT_WR: i32 = 1;

#[repr(C)]
pub struct SockaddrIn {
    pub family: u16,
    pub port: u16,
    pub addr: u32,
    pub zero: [u8; 8],
}

#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
pub struct EpollEvent {
    pub events: u32,
    pub data: u64,
}

extern "C" {
    pub fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
    pub fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
    pub fn bind(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    pub fn listen(fd: i32, backlog: i32) -> i32;
    pub fn accept4(fd: i32, addr: *mut u8, len: *mut u32, flags: i32) -> i32;
    pub fn connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    pub fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
    pub fn send(fd: i32, buf: *const u8, len: usize, flags: i32) -> isize;
    pub fn shutdown(fd: i32, how: i32) -> i32;
    pub fn close(fd: i32) -> i32;
    pub fn epoll_create1(flags: i32) -> i32;
    pub fn epoll_ctl(ep: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    pub fn epoll_wait(ep: i32, events: *mut EpollEvent, max: i32, timeout: i32) -> i32;
}

/// 127.0.0.1:port.
pub fn loopback(port: u16) -> SockaddrIn {
    SockaddrIn {
        family: AF_INET as u16,
        port: port.to_be(),
        addr: u32::from_ne_bytes([127, 0, 0, 1]),
        zero: [0; 8],
    }
}
