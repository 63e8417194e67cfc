//! Raw IPv4 sockets for VRRP (IP protocol 112).
//!
//! Two sockets, because a raw socket bound to an address only receives datagrams addressed to
//! it, which would hide the multicast adverts: the receiving one is bound to the interface only
//! (and joins 224.0.0.18 unless unicast); the sending one is also bound to our source address so
//! the kernel-built IP header carries exactly the address the pseudo-header checksum covered.
//! The sending socket drops everything it would receive through a one-instruction BPF filter.
//! The receiving one alone ([`Receiver`]) also serves `khagent probe-vrid`, which only listens.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

use super::sys;
use crate::vrrp::packet::{IPPROTO_VRRP, VRRP_MULTICAST, VRRP_TTL};

/// DSCP CS6 ("internetwork control"), as routing protocols and keepalived use.
const TOS_INTERNETWORK_CONTROL: libc::c_int = 0xc0;

/// The receiving raw socket: every VRRP datagram that reaches `interface`, IP header included.
#[derive(Debug)]
pub struct Receiver {
    rx: AsyncFd<OwnedFd>,
}

impl Receiver {
    /// Opens it on `interface`, joining 224.0.0.18 there if `multicast`. Must run inside a
    /// tokio runtime (the socket registers with its reactor).
    pub fn open(interface: &str, ifindex: u32, multicast: bool) -> io::Result<Self> {
        let proto = libc::c_int::from(IPPROTO_VRRP);
        let rx = sys::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto)?;
        sys::bind_to_device(&rx, interface)?;
        if multicast {
            let mreq = libc::ip_mreqn {
                imr_multiaddr: sys::sockaddr_in(VRRP_MULTICAST).sin_addr,
                imr_address: sys::sockaddr_in(Ipv4Addr::UNSPECIFIED).sin_addr,
                imr_ifindex: libc::c_int::try_from(ifindex)
                    .map_err(|_| io::ErrorKind::InvalidInput)?,
            };
            sys::setsockopt(&rx, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)?;
        }
        // SAFETY: an OwnedFd is open until dropped and always returns the same descriptor, and
        // the AsyncFd owns it from here on.
        let rx = unsafe { AsyncFd::register(rx) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { rx })
    }

    /// Receives a datagram that is already queued, without waiting; `None` if there is none.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match sys::recv(self.rx.get_ref(), buf, libc::MSG_TRUNC | libc::MSG_DONTWAIT) {
            Ok(len) => Ok(Some(len)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives one whole IPv4 datagram (header included); truncated to `buf` if larger, and
    /// the returned length is the datagram's real length so truncation is visible.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.rx.readable().await?;
            match guard.try_io(|fd| sys::recv(fd.get_ref(), buf, libc::MSG_TRUNC)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The pair of raw sockets of one instance.
#[derive(Debug)]
pub struct VrrpSocket {
    rx: Receiver,
    tx: OwnedFd,
}

impl VrrpSocket {
    /// Opens both sockets on `interface`. Must run inside a tokio runtime (the receiving socket
    /// registers with its reactor).
    pub fn open(
        interface: &str,
        ifindex: u32,
        source: Ipv4Addr,
        multicast: bool,
    ) -> io::Result<Self> {
        let rx = Receiver::open(interface, ifindex, multicast)?;
        let ifindex = libc::c_int::try_from(ifindex).map_err(|_| io::ErrorKind::InvalidInput)?;
        let proto = libc::c_int::from(IPPROTO_VRRP);
        let tx = sys::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto)?;
        sys::bind_to_device(&tx, interface)?;
        sys::bind(&tx, &sys::sockaddr_in(source))?;
        let ttl = libc::c_int::from(VRRP_TTL);
        // §5.1.1.3: TTL 255 on every advert, unicast (IP_TTL) or multicast (IP_MULTICAST_TTL).
        sys::setsockopt(&tx, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
        sys::setsockopt(&tx, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &ttl)?;
        sys::setsockopt(
            &tx,
            libc::IPPROTO_IP,
            libc::IP_TOS,
            &TOS_INTERNETWORK_CONTROL,
        )?;
        // Our own adverts must not come back to us as if another router sent them.
        sys::setsockopt(
            &tx,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_LOOP,
            &0 as &libc::c_int,
        )?;
        let mreq = libc::ip_mreqn {
            imr_multiaddr: sys::sockaddr_in(Ipv4Addr::UNSPECIFIED).sin_addr,
            imr_address: sys::sockaddr_in(source).sin_addr,
            imr_ifindex: ifindex,
        };
        sys::setsockopt(&tx, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)?;
        let drop_all = [libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        }]; // BPF_RET | BPF_K, 0
        let program = libc::sock_fprog {
            len: 1,
            filter: drop_all.as_ptr().cast_mut(),
        };
        sys::setsockopt(&tx, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &program)?;
        Ok(Self { rx, tx })
    }

    /// Sends one VRRP message (no IP header) to `dst`; the kernel adds the IP header.
    pub fn send(&self, msg: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let sent = sys::send_to(&self.tx, msg, &sys::sockaddr_in(dst))?;
        if sent == msg.len() {
            Ok(())
        } else {
            Err(io::ErrorKind::WriteZero.into())
        }
    }

    /// See [`Receiver::try_recv`].
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.rx.try_recv(buf)
    }

    /// See [`Receiver::recv`].
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.rx.recv(buf).await
    }
}
