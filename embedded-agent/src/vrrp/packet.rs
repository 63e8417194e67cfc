//! VRRPv3 advertisements for IPv4 (RFC 5798 §5): encoding, decoding and the receive checks of
//! §7.1 that need nothing but the bytes (TTL, version, type, checksum, address count).
//! Checks that need configuration (VRID, peers, address list) live in the runner.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP (§5.2.4).
pub const IPPROTO_VRRP: u8 = 112;
/// Multicast group adverts go to (§5.1.1.2).
pub const VRRP_MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Adverts are sent and accepted with TTL 255 only (§5.1.1.3, §7.1).
pub const VRRP_TTL: u8 = 255;
/// The Max Adver Int field is 12 bits of centiseconds (§5.2.7).
pub const MAX_ADVERT_INTERVAL_CS: u16 = 0x0fff;

const VERSION: u8 = 3;
const TYPE_ADVERTISEMENT: u8 = 1;
const HEADER_LEN: usize = 8;
const IPV4_MIN_HEADER: usize = 20;

/// One VRRP advertisement (the VRRP part of the datagram).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub vrid: u8,
    /// 0 means the master is stopping (§5.2.4, §6.4.3).
    pub priority: u8,
    /// Max Adver Int in centiseconds (12 bits).
    pub max_advert_int_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
}

/// A decoded IPv4 datagram carrying an advert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub advert: Advert,
}

/// Why a received datagram was dropped. Each maps to its own counter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {len} bytes")]
    Truncated { len: usize },
    #[error("not an IPv4 VRRP datagram")]
    NotVrrp,
    #[error("TTL {0} (must be 255, RFC 5798 §7.1)")]
    BadTtl(u8),
    #[error("version {0} (only 3 is supported)")]
    BadVersion(u8),
    #[error("type {0} (only 1, advertisement, exists)")]
    BadType(u8),
    #[error("bad checksum")]
    BadChecksum,
    #[error("address count {count} does not match {len} bytes of VRRP message")]
    CountMismatch { count: u8, len: usize },
    #[error("advert interval of 0 centiseconds")]
    BadInterval,
}

impl Advert {
    /// The VRRP message (no IP header) with the checksum over the IPv4 pseudo-header (§5.2.8:
    /// "for IPv4 ... the pseudo-header" applies to version 3).
    pub fn encode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        // The count field is a byte; more than 255 addresses cannot be represented and the
        // settings allow exactly one, so clip rather than fail.
        let addresses = &self.addresses[..self.addresses.len().min(255)];
        let mut buf = Vec::with_capacity(HEADER_LEN + 4 * addresses.len());
        buf.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        buf.push(self.vrid);
        buf.push(self.priority);
        buf.push(u8::try_from(addresses.len()).unwrap_or(u8::MAX));
        buf.extend_from_slice(&(self.max_advert_int_cs & MAX_ADVERT_INTERVAL_CS).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        for addr in addresses {
            buf.extend_from_slice(&addr.octets());
        }
        let sum = checksum(&buf, src, dst);
        buf[6..8].copy_from_slice(&sum.to_be_bytes());
        buf
    }

    /// Decodes a VRRP message received from `src` to `dst` (§7.1 checks except TTL and VRID).
    pub fn decode(msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<Self, DecodeError> {
        if msg.len() < HEADER_LEN {
            return Err(DecodeError::Truncated { len: msg.len() });
        }
        let version = msg[0] >> 4;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let kind = msg[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(DecodeError::BadType(kind));
        }
        if checksum(msg, src, dst) != 0 {
            return Err(DecodeError::BadChecksum);
        }
        let count = msg[3];
        if msg.len() != HEADER_LEN + 4 * usize::from(count) {
            return Err(DecodeError::CountMismatch {
                count,
                len: msg.len(),
            });
        }
        let max_advert_int_cs = u16::from_be_bytes([msg[4], msg[5]]) & MAX_ADVERT_INTERVAL_CS;
        if max_advert_int_cs == 0 {
            return Err(DecodeError::BadInterval);
        }
        let addresses = msg[HEADER_LEN..]
            .chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect();
        Ok(Self {
            vrid: msg[1],
            priority: msg[2],
            max_advert_int_cs,
            addresses,
        })
    }
}

/// Decodes a whole IPv4 datagram as delivered by a raw socket (IP header included), checking
/// the TTL first as §7.1 orders.
pub fn decode_ipv4(datagram: &[u8]) -> Result<Received, DecodeError> {
    if datagram.len() < IPV4_MIN_HEADER {
        return Err(DecodeError::Truncated {
            len: datagram.len(),
        });
    }
    if datagram[0] >> 4 != 4 || datagram[9] != IPPROTO_VRRP {
        return Err(DecodeError::NotVrrp);
    }
    let header_len = usize::from(datagram[0] & 0x0f) * 4;
    // The kernel hands raw sockets the datagram with its total length intact; trust it over
    // the buffer so trailing link padding cannot break the checksum.
    let total_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if header_len < IPV4_MIN_HEADER || total_len < header_len || datagram.len() < total_len {
        return Err(DecodeError::Truncated {
            len: datagram.len(),
        });
    }
    let ttl = datagram[8];
    if ttl != VRRP_TTL {
        return Err(DecodeError::BadTtl(ttl));
    }
    let src = Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
    let dst = Ipv4Addr::new(datagram[16], datagram[17], datagram[18], datagram[19]);
    let advert = Advert::decode(&datagram[header_len..total_len], src, dst)?;
    Ok(Received { src, dst, advert })
}

/// Internet checksum (RFC 1071) over the IPv4 pseudo-header and `msg`. Over a message that
/// carries a correct checksum the result is 0.
fn checksum(msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, IPPROTO_VRRP]);
    add(&len.to_be_bytes());
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(u16::try_from(sum).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);

    fn advert() -> Advert {
        Advert {
            vrid: 51,
            priority: 150,
            max_advert_int_cs: 10,
            addresses: vec![Ipv4Addr::new(10, 98, 0, 100)],
        }
    }

    /// Wraps a VRRP message in an IPv4 header the way the kernel delivers it.
    fn ip(msg: &[u8], ttl: u8, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let total = u16::try_from(20 + msg.len()).unwrap().to_be_bytes();
        let mut d = vec![0x45, 0xc0, total[0], total[1], 0, 0, 0, 0, ttl, 112, 0, 0];
        d.extend_from_slice(&src.octets());
        d.extend_from_slice(&dst.octets());
        d.extend_from_slice(msg);
        d
    }

    /// Recomputes the checksum of an edited message, so a test breaks exactly one thing.
    fn refresh_checksum(msg: &mut [u8]) {
        msg[6..8].copy_from_slice(&[0, 0]);
        let sum = checksum(msg, SRC, VRRP_MULTICAST);
        msg[6..8].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn encodes_the_rfc_5798_section_5_1_layout() {
        let bytes = advert().encode(SRC, VRRP_MULTICAST);
        assert_eq!(&bytes[..6], &[0x31, 51, 150, 1, 0x00, 10]);
        assert_eq!(&bytes[8..], &[10, 98, 0, 100]);
        assert_eq!(checksum(&bytes, SRC, VRRP_MULTICAST), 0);
    }

    #[test]
    fn round_trips_through_an_ip_datagram() {
        let msg = advert().encode(SRC, VRRP_MULTICAST);
        let got = decode_ipv4(&ip(&msg, 255, SRC, VRRP_MULTICAST)).unwrap();
        assert_eq!(
            got,
            Received {
                src: SRC,
                dst: VRRP_MULTICAST,
                advert: advert()
            }
        );
    }

    /// An advert sent by Debian's keepalived 2.2.7 (`vrrp_version 3`, virtual_router_id 51,
    /// priority 150, advert_int 0.1, VIP 10.98.0.100) from 10.98.0.2, captured with
    /// `tcpdump -xx` on a lab bridge. Proves our pseudo-header checksum matches keepalived's.
    #[test]
    fn decodes_an_advert_captured_from_keepalived() {
        let captured: &[u8] = &KEEPALIVED_ADVERT;
        let got = decode_ipv4(captured).unwrap();
        assert_eq!(got.src, SRC);
        assert_eq!(got.dst, VRRP_MULTICAST);
        assert_eq!(got.advert, advert());
        // And we produce exactly keepalived's bytes for the same advert.
        assert_eq!(advert().encode(SRC, VRRP_MULTICAST), &captured[20..]);
    }

    #[test]
    fn rejects_ttl_other_than_255() {
        let msg = advert().encode(SRC, VRRP_MULTICAST);
        assert_eq!(
            decode_ipv4(&ip(&msg, 254, SRC, VRRP_MULTICAST)),
            Err(DecodeError::BadTtl(254))
        );
        assert_eq!(
            decode_ipv4(&ip(&msg, 1, SRC, VRRP_MULTICAST)),
            Err(DecodeError::BadTtl(1))
        );
    }

    #[test]
    fn rejects_version_2() {
        let mut msg = advert().encode(SRC, VRRP_MULTICAST);
        msg[0] = 0x21;
        assert_eq!(
            Advert::decode(&msg, SRC, VRRP_MULTICAST),
            Err(DecodeError::BadVersion(2))
        );
    }

    #[test]
    fn rejects_unknown_type() {
        let mut msg = advert().encode(SRC, VRRP_MULTICAST);
        msg[0] = 0x32;
        assert_eq!(
            Advert::decode(&msg, SRC, VRRP_MULTICAST),
            Err(DecodeError::BadType(2))
        );
    }

    #[test]
    fn rejects_a_flipped_bit_as_bad_checksum() {
        let mut msg = advert().encode(SRC, VRRP_MULTICAST);
        msg[2] ^= 0x01;
        assert_eq!(
            Advert::decode(&msg, SRC, VRRP_MULTICAST),
            Err(DecodeError::BadChecksum)
        );
    }

    #[test]
    fn checksum_covers_the_pseudo_header() {
        // Same bytes, claimed from another source: v3 binds the checksum to the addresses.
        let msg = advert().encode(SRC, VRRP_MULTICAST);
        let other = Ipv4Addr::new(10, 98, 0, 3);
        assert_eq!(
            Advert::decode(&msg, other, VRRP_MULTICAST),
            Err(DecodeError::BadChecksum)
        );
    }

    #[test]
    fn rejects_truncated_messages_and_headers() {
        let msg = advert().encode(SRC, VRRP_MULTICAST);
        assert_eq!(
            Advert::decode(&msg[..7], SRC, VRRP_MULTICAST),
            Err(DecodeError::Truncated { len: 7 })
        );
        let datagram = ip(&msg, 255, SRC, VRRP_MULTICAST);
        assert!(matches!(
            decode_ipv4(&datagram[..19]),
            Err(DecodeError::Truncated { .. })
        ));
        // IP total length claims more than arrived.
        assert!(matches!(
            decode_ipv4(&datagram[..27]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn rejects_address_count_that_disagrees_with_length() {
        let mut a = advert();
        a.addresses.push(Ipv4Addr::new(10, 98, 0, 101));
        let mut msg = a.encode(SRC, VRRP_MULTICAST);
        msg.truncate(12);
        // Fix the checksum for the shortened message so only the count is wrong.
        refresh_checksum(&mut msg);
        assert_eq!(
            Advert::decode(&msg, SRC, VRRP_MULTICAST),
            Err(DecodeError::CountMismatch { count: 2, len: 12 })
        );
    }

    #[test]
    fn rejects_zero_advert_interval() {
        let mut a = advert();
        a.max_advert_int_cs = 0;
        let msg = a.encode(SRC, VRRP_MULTICAST);
        assert_eq!(
            Advert::decode(&msg, SRC, VRRP_MULTICAST),
            Err(DecodeError::BadInterval)
        );
    }

    #[test]
    fn ignores_reserved_bits_above_the_12_bit_interval() {
        let mut msg = advert().encode(SRC, VRRP_MULTICAST);
        msg[4] |= 0xf0;
        refresh_checksum(&mut msg);
        assert_eq!(
            Advert::decode(&msg, SRC, VRRP_MULTICAST)
                .unwrap()
                .max_advert_int_cs,
            10
        );
    }

    #[test]
    fn non_vrrp_datagrams_are_rejected() {
        let msg = advert().encode(SRC, VRRP_MULTICAST);
        let mut d = ip(&msg, 255, SRC, VRRP_MULTICAST);
        d[9] = 17;
        assert_eq!(decode_ipv4(&d), Err(DecodeError::NotVrrp));
    }

    #[test]
    fn never_panics_on_arbitrary_prefixes_and_bytes() {
        let msg = advert().encode(SRC, VRRP_MULTICAST);
        let d = ip(&msg, 255, SRC, VRRP_MULTICAST);
        for n in 0..d.len() {
            assert!(decode_ipv4(&d[..n]).is_err());
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x.to_le_bytes()[0]
                })
                .collect();
            let _ = decode_ipv4(&bytes);
        }
    }

    /// Datagrams that pass the IPv4 checks (version 4, IHL 5, protocol 112, usually TTL 255)
    /// and carry VRRP-looking bytes: random address counts, message lengths that match, fall
    /// short or run over, total-length fields that lie, and usually a correct checksum, so the
    /// decoder gets past the IP header and the checksum. It must never panic, and whatever it
    /// accepts must agree with the bytes.
    #[test]
    fn never_panics_on_vrrp_shaped_datagrams_and_accepts_only_consistent_ones() {
        let mut x: u32 = 0x9e37_79b9;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
        for _ in 0..20_000 {
            let count = if next() % 4 == 0 {
                next().to_le_bytes()[0]
            } else {
                u8::try_from(next() % 6).unwrap()
            };
            let exact = HEADER_LEN + 4 * usize::from(count);
            let len = match next() % 8 {
                0..=3 => exact,
                4 => usize::try_from(next()).unwrap() % exact,
                5 => exact + 1 + usize::try_from(next() % 7).unwrap(),
                _ => usize::try_from(next() % 64).unwrap(),
            };
            let mut msg: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
            if let Some(b) = msg.first_mut()
                && next() % 8 != 0
            {
                *b = 0x31;
            }
            if let Some(b) = msg.get_mut(3) {
                *b = count;
            }
            if msg.len() >= 6 && next() % 8 == 0 {
                msg[4] &= 0xf0;
                msg[5] = 0;
            }
            let src = Ipv4Addr::from(next());
            let dst = Ipv4Addr::from(next());
            if msg.len() >= HEADER_LEN && next() % 8 != 0 {
                msg[6..8].copy_from_slice(&[0, 0]);
                let sum = checksum(&msg, src, dst);
                msg[6..8].copy_from_slice(&sum.to_be_bytes());
            }
            let ttl = if next() % 16 == 0 { 64 } else { VRRP_TTL };
            let mut d = ip(&msg, ttl, src, dst);
            match next() % 16 {
                // The total length claims more or less than the buffer holds.
                0 => d[2..4].copy_from_slice(&u16::try_from(next() % 96).unwrap().to_be_bytes()),
                // The buffer is cut short.
                1 => d.truncate(usize::try_from(next()).unwrap() % d.len()),
                // Link padding after the datagram.
                2 => d.extend((0..next() % 8).map(|_| next().to_le_bytes()[0])),
                _ => {}
            }

            let outcome = match decode_ipv4(&d) {
                Ok(r) => {
                    let total = usize::from(u16::from_be_bytes([d[2], d[3]]));
                    let m = &d[20..total];
                    assert_eq!(d[8], VRRP_TTL);
                    assert_eq!((r.src, r.dst), (src, dst));
                    assert_eq!(m[0], 0x31);
                    assert_eq!(checksum(m, src, dst), 0);
                    assert_eq!(r.advert.addresses.len(), usize::from(m[3]), "{r:?}");
                    assert_eq!(m.len(), HEADER_LEN + 4 * r.advert.addresses.len());
                    assert_eq!((r.advert.vrid, r.advert.priority), (m[1], m[2]));
                    let interval = u16::from_be_bytes([m[4], m[5]]) & MAX_ADVERT_INTERVAL_CS;
                    assert_eq!(r.advert.max_advert_int_cs, interval);
                    assert_ne!(interval, 0);
                    for (a, c) in r.advert.addresses.iter().zip(m[HEADER_LEN..].chunks(4)) {
                        assert_eq!(&a.octets()[..], c);
                    }
                    "Ok".to_owned()
                }
                Err(e) => format!("{e:?}")
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap()
                    .to_owned(),
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
        // Every check of the decoder, and acceptance, was reached.
        for outcome in [
            "Ok",
            "Truncated",
            "BadTtl",
            "BadVersion",
            "BadType",
            "BadChecksum",
            "CountMismatch",
            "BadInterval",
        ] {
            assert!(
                outcomes.get(outcome).copied().unwrap_or(0) >= 20,
                "{outcome} reached too rarely: {outcomes:?}"
            );
        }
    }

    /// IPv4 header + VRRP message of the first advert in `tcpdump -xx` output (Ethernet header
    /// stripped): `IP 10.98.0.2 > 224.0.0.18: VRRPv3, Advertisement, vrid 51, prio 150,
    /// intvl 10cs, length 12`.
    const KEEPALIVED_ADVERT: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xd0, 0x36, 0x0a, 0x62, 0x00,
        0x02, 0xe0, 0x00, 0x00, 0x12, // IPv4: TTL 255, proto 112, 10.98.0.2 > 224.0.0.18
        0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0x43, 0x08, 0x0a, 0x62, 0x00, 0x64, // VRRPv3
    ];
}
