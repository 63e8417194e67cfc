//! Gratuitous ARP for the VIP over an `AF_PACKET` socket, so neighbours move their cache
//! entry to this node's MAC the moment it becomes master (RFC 5798 §6.4.2 "Broadcast a
//! gratuitous ARP request").

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use super::sys;

const ETH_ALEN: usize = 6;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;

/// Sends gratuitous ARPs on one interface.
#[derive(Debug)]
pub struct GratuitousArp {
    fd: OwnedFd,
    ifindex: libc::c_int,
    mac: [u8; ETH_ALEN],
}

impl GratuitousArp {
    pub fn open(interface: &str, ifindex: u32) -> io::Result<Self> {
        // Protocol 0: the socket can send but receives nothing, so it never queues the
        // segment's ARP traffic.
        let fd = sys::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0)?;
        let ifindex = libc::c_int::try_from(ifindex).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mac = hardware_address(&fd, interface)?;
        Ok(Self { fd, ifindex, mac })
    }

    /// One broadcast ARP request with sender = target = `vip`, like keepalived's.
    pub fn send(&self, vip: Ipv4Addr) -> io::Result<()> {
        let frame = request(self.mac, vip);
        let mut dest = libc::sockaddr_ll {
            sll_family: u16::try_from(libc::AF_PACKET).unwrap_or_default(),
            sll_protocol: u16::try_from(libc::ETH_P_ARP).unwrap_or_default().to_be(),
            sll_ifindex: self.ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: [0; 8],
        };
        dest.sll_addr[..ETH_ALEN].copy_from_slice(&[0xff; ETH_ALEN]);
        sys::send_to(&self.fd, &frame, &dest)?;
        Ok(())
    }
}

/// The ARP payload (RFC 826) of a gratuitous request; the kernel adds the Ethernet header.
fn request(mac: [u8; ETH_ALEN], vip: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(28);
    p.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    p.extend_from_slice(&[6, 4]);
    p.extend_from_slice(&ARPOP_REQUEST.to_be_bytes());
    p.extend_from_slice(&mac);
    p.extend_from_slice(&vip.octets());
    p.extend_from_slice(&[0xff; ETH_ALEN]);
    p.extend_from_slice(&vip.octets());
    p
}

/// The interface's MAC address (`SIOCGIFHWADDR`).
fn hardware_address(fd: &OwnedFd, interface: &str) -> io::Result<[u8; ETH_ALEN]> {
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: `req` is a live ifreq with a NUL-terminated name; SIOCGIFHWADDR writes only
    // inside it.
    sys::cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: SIOCGIFHWADDR succeeded, so the union holds `ifru_hwaddr`.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0; ETH_ALEN];
    for (dst, src) in mac.iter_mut().zip(data) {
        *dst = src.to_ne_bytes()[0];
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_request_announces_the_vip_as_both_sender_and_target() {
        let p = request([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 98, 0, 100));
        assert_eq!(p.len(), 28);
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&p[14..18], &[10, 98, 0, 100]);
        assert_eq!(&p[24..28], &[10, 98, 0, 100]);
    }
}
