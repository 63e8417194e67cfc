//! Hand-rolled rtnetlink (NETLINK_ROUTE) for the three address operations VRRP needs: add or
//! refresh the VIP with a lifetime, delete it, and list an interface's IPv4 addresses.
//!
//! Why lifetimes: keepalived installs its VIP permanently, so a SIGKILLed keepalived leaves the
//! address behind and two nodes answer for it. We install the VIP with `valid_lft` and
//! `preferred_lft` of a few seconds (IFA_CACHEINFO) and rewrite them while master
//! (`NLM_F_REPLACE` on an existing address only resets its lifetime); the kernel deletes an
//! address whose lifetime ran out by itself.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::sys;

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_CACHEINFO: u16 = 6;
const IFA_F_SECONDARY: u8 = 0x01;
/// Set by the kernel on an address whose valid lifetime is infinite (`valid_lft forever`).
const IFA_F_PERMANENT: u8 = 0x80;
const IFADDRMSG_LEN: usize = 8;

/// An IPv4 address as listed by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub secondary: bool,
    /// `valid_lft forever`: added without a lifetime, which khagent never does.
    pub permanent: bool,
}

/// A NETLINK_ROUTE socket used synchronously: one request, wait for its answer.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        let fd = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // SAFETY: sockaddr_nl is plain old data; all-zero is valid (pid 0 = let the kernel pick).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = u16::try_from(libc::AF_NETLINK).unwrap_or_default();
        sys::bind(&fd, &addr)?;
        // The kernel answers address requests in microseconds; a bound keeps a wedged kernel
        // from stalling the VRRP thread forever.
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        sys::setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
        Ok(Self { fd, seq: 0 })
    }

    /// Adds `address/prefix_len` to the interface, or refreshes its lifetime if present.
    pub fn add_address(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
        lifetime: Duration,
    ) -> io::Result<()> {
        let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX).max(1);
        let mut cacheinfo = Vec::with_capacity(16);
        for value in [secs, secs, 0, 0] {
            cacheinfo.extend_from_slice(&value.to_ne_bytes());
        }
        let attrs = [
            (IFA_LOCAL, address.octets().to_vec()),
            (IFA_ADDRESS, address.octets().to_vec()),
            (IFA_CACHEINFO, cacheinfo),
        ];
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.request(RTM_NEWADDR, flags, ifaddrmsg(ifindex, prefix_len), &attrs)
    }

    /// Deletes `address/prefix_len`; `Ok(false)` if it was not there.
    pub fn delete_address(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> io::Result<bool> {
        let attrs = [(IFA_LOCAL, address.octets().to_vec())];
        match self.request(
            RTM_DELADDR,
            NLM_F_REQUEST | NLM_F_ACK,
            ifaddrmsg(ifindex, prefix_len),
            &attrs,
        ) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses of one interface, in the kernel's order (primary first).
    pub fn addresses(&mut self, ifindex: u32) -> io::Result<Vec<InterfaceAddress>> {
        let seq = self.send(
            RTM_GETADDR,
            NLM_F_REQUEST | NLM_F_DUMP,
            ifaddrmsg(0, 0),
            &[],
        )?;
        let mut found = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = sys::recv(&self.fd, &mut buf, 0)?;
            for (kind, msg_seq, payload) in messages(&buf[..n.min(buf.len())]) {
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(found),
                    NLMSG_ERROR => ack(payload)?,
                    RTM_NEWADDR => found.extend(parse_address(payload, ifindex)),
                    _ => {}
                }
            }
        }
    }

    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        header: [u8; IFADDRMSG_LEN],
        attrs: &[(u16, Vec<u8>)],
    ) -> io::Result<()> {
        let seq = self.send(kind, flags, header, attrs)?;
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            let n = sys::recv(&self.fd, &mut buf, 0)?;
            for (msg_kind, msg_seq, payload) in messages(&buf[..n.min(buf.len())]) {
                if msg_seq == seq && msg_kind == NLMSG_ERROR {
                    return ack(payload);
                }
            }
        }
    }

    fn send(
        &mut self,
        kind: u16,
        flags: u16,
        header: [u8; IFADDRMSG_LEN],
        attrs: &[(u16, Vec<u8>)],
    ) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut body = header.to_vec();
        for (attr, value) in attrs {
            let len = u16::try_from(4 + value.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
            body.extend_from_slice(&len.to_ne_bytes());
            body.extend_from_slice(&attr.to_ne_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let total =
            u32::try_from(NLMSG_HDR_LEN + body.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut msg = Vec::with_capacity(NLMSG_HDR_LEN + body.len());
        msg.extend_from_slice(&total.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        // SAFETY: sockaddr_nl is plain old data; all-zero addresses the kernel (pid 0).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = u16::try_from(libc::AF_NETLINK).unwrap_or_default();
        sys::send_to(&self.fd, &msg, &kernel)?;
        Ok(self.seq)
    }
}

/// `struct ifaddrmsg` for AF_INET, global scope.
fn ifaddrmsg(ifindex: u32, prefix_len: u8) -> [u8; IFADDRMSG_LEN] {
    let mut h = [0u8; IFADDRMSG_LEN];
    h[0] = u8::try_from(libc::AF_INET).unwrap_or_default();
    h[1] = prefix_len;
    h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    h
}

/// Splits a netlink datagram into (type, seq, payload) messages, stopping at malformed ones.
fn messages(mut buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        out.push((kind, seq, &buf[NLMSG_HDR_LEN..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

/// An NLMSG_ERROR payload: errno 0 is the acknowledgement.
fn ack(payload: &[u8]) -> io::Result<()> {
    let code = payload.get(..4).map_or(-libc::EPROTO, |b| {
        i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    });
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

/// One RTM_NEWADDR of the dump, if it is IPv4 on `ifindex`.
fn parse_address(payload: &[u8], ifindex: u32) -> Option<InterfaceAddress> {
    let header = payload.get(..IFADDRMSG_LEN)?;
    let index = u32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
    if i32::from(header[0]) != libc::AF_INET || index != ifindex {
        return None;
    }
    let mut attrs = &payload[IFADDRMSG_LEN..];
    let (mut local, mut address) = (None, None);
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        if let Ok(octets) = <[u8; 4]>::try_from(&attrs[4..len]) {
            match kind {
                IFA_LOCAL => local = Some(Ipv4Addr::from(octets)),
                IFA_ADDRESS => address = Some(Ipv4Addr::from(octets)),
                _ => {}
            }
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    Some(InterfaceAddress {
        address: local.or(address)?,
        prefix_len: header[1],
        secondary: header[2] & IFA_F_SECONDARY != 0,
        permanent: header[2] & IFA_F_PERMANENT != 0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// One netlink message: header + body, padded to 4 bytes.
    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(NLMSG_HDR_LEN + body.len()).unwrap();
        let mut m = len.to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    /// An RTM_NEWADDR body as the kernel dumps it: ifaddrmsg, IFA_ADDRESS, IFA_LOCAL.
    fn address(ifindex: u32, addr: [u8; 4], prefix: u8, flags: u8) -> Vec<u8> {
        let mut b = ifaddrmsg(ifindex, prefix).to_vec();
        b[2] = flags;
        for kind in [IFA_ADDRESS, IFA_LOCAL] {
            b.extend_from_slice(&8u16.to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(&addr);
        }
        b
    }

    #[test]
    fn splits_a_dump_into_messages_and_parses_addresses_of_one_interface() {
        let mut dump = message(RTM_NEWADDR, 7, &address(2, [10, 98, 0, 2], 24, 0));
        dump.extend(message(
            RTM_NEWADDR,
            7,
            &address(2, [10, 98, 0, 100], 24, IFA_F_SECONDARY | IFA_F_PERMANENT),
        ));
        dump.extend(message(RTM_NEWADDR, 7, &address(1, [127, 0, 0, 1], 8, 0)));
        dump.extend(message(NLMSG_DONE, 7, &[0; 4]));
        let msgs = messages(&dump);
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[3].0, NLMSG_DONE);
        let found: Vec<_> = msgs
            .iter()
            .filter_map(|(_, _, p)| parse_address(p, 2))
            .collect();
        assert_eq!(
            found,
            [
                InterfaceAddress {
                    address: Ipv4Addr::new(10, 98, 0, 2),
                    prefix_len: 24,
                    secondary: false,
                    permanent: false
                },
                InterfaceAddress {
                    address: Ipv4Addr::new(10, 98, 0, 100),
                    prefix_len: 24,
                    secondary: true,
                    permanent: true
                },
            ]
        );
    }

    #[test]
    fn acknowledgement_carries_the_negated_errno() {
        assert!(ack(&0i32.to_ne_bytes()).is_ok());
        let err = ack(&(-libc::EEXIST).to_ne_bytes()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        assert!(
            ack(&[0, 0]).is_err(),
            "a short error payload is an error, not an ack"
        );
    }

    #[test]
    fn malformed_lengths_end_parsing_instead_of_panicking() {
        let mut m = message(RTM_NEWADDR, 1, &address(2, [10, 0, 0, 1], 24, 0));
        m[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(messages(&m).is_empty());
        m[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(messages(&m).is_empty());
        let mut body = address(2, [10, 0, 0, 1], 24, 0);
        body[8..10].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(parse_address(&body, 2), None);
        assert_eq!(parse_address(&body[..5], 2), None);
    }
}
