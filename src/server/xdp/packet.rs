//! The frames of the AF_XDP path: which Ethernet frames are UDP queries to us (IPv4 without
//! options, IPv6 without extension headers, no VLAN tag, not fragmented), and the reply's
//! Ethernet/IP/UDP headers written in place over the query's, with both checksums.
//!
//! The XDP program (`bpf.rs`) already let only such frames through to the socket, so `parse`
//! refusing one is a bound that should not trip; it still checks every length, since the
//! frame comes from outside. The query's UDP checksum is not verified: frames from a local
//! sender (veth, and NICs with checksum offload) carry a partial checksum that the kernel
//! would accept on trust too; a corrupted DNS message still gets FORMERR or silence.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;
const UDP: usize = 8;
const ETHERTYPE_IP4: u16 = 0x0800;
const ETHERTYPE_IP6: u16 = 0x86dd;
const PROTO_UDP: u8 = 17;
/// TTL / hop limit of replies: Linux's default, as the socket path sends them.
const HOPS: u8 = 64;

/// A UDP datagram in an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The sender (the client).
    pub client: SocketAddr,
    /// Where it was sent (one of our listen addresses, if the program is right).
    pub local: SocketAddr,
    /// Where the UDP payload (the DNS message) lies in the frame.
    pub payload: Range<usize>,
}

impl Datagram {
    /// Length of the Ethernet + IP + UDP headers, the same for the reply.
    pub fn header_len(&self) -> usize {
        self.payload.start
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The UDP datagram in `frame`, or `None` for anything else (which the program passes to the
/// kernel, so it should not arrive here).
pub fn parse(frame: &[u8]) -> Option<Datagram> {
    if frame.len() < ETH + IP4 + UDP {
        return None;
    }
    match be16(frame, 12) {
        ETHERTYPE_IP4 => {
            let ip = &frame[ETH..];
            // Version 4, IHL 5 (no options), UDP, neither a fragment nor "more fragments".
            if ip[0] != 0x45 || ip[9] != PROTO_UDP || be16(ip, 6) & 0x3fff != 0 {
                return None;
            }
            let total = usize::from(be16(ip, 2));
            if total < IP4 + UDP || ETH + total > frame.len() {
                return None;
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            udp(frame, ETH + IP4, ETH + total, src.into(), dst.into())
        }
        ETHERTYPE_IP6 => {
            if frame.len() < ETH + IP6 + UDP {
                return None;
            }
            let ip = &frame[ETH..];
            if ip[0] >> 4 != 6 || ip[6] != PROTO_UDP {
                return None;
            }
            let end = ETH + IP6 + usize::from(be16(ip, 4));
            if end > frame.len() {
                return None;
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            dst.copy_from_slice(&ip[24..40]);
            udp(
                frame,
                ETH + IP6,
                end,
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
            )
        }
        _ => None,
    }
}

/// The UDP header at `at`, within an IP packet ending at `ip_end`.
fn udp(frame: &[u8], at: usize, ip_end: usize, src: IpAddr, dst: IpAddr) -> Option<Datagram> {
    if at + UDP > ip_end {
        return None;
    }
    let len = usize::from(be16(frame, at + 4));
    if len < UDP || at + len > ip_end {
        return None;
    }
    Some(Datagram {
        client: SocketAddr::new(src, be16(frame, at)),
        local: SocketAddr::new(dst, be16(frame, at + 2)),
        payload: at + UDP..at + len,
    })
}

/// Ones' complement sum of `data` (big-endian 16-bit words, an odd last byte padded), added to
/// `sum`; not yet folded.
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Turns the query frame in `frame` (parsed as `d`) into the reply carrying `payload`: MAC
/// addresses, IP addresses and ports swapped, lengths, TTL and checksums set. `frame` is the
/// whole writable buffer the query sits at the start of. Returns the reply frame's length, or
/// `None` when the reply does not fit in `frame` or in `max_frame` (the link's MTU plus the
/// Ethernet header: an XDP transmit cannot fragment).
pub fn write_reply(
    frame: &mut [u8],
    d: &Datagram,
    payload: &[u8],
    max_frame: usize,
) -> Option<usize> {
    let hdr = d.header_len();
    let total = hdr + payload.len();
    if total > frame.len() || total > max_frame || payload.len() > usize::from(u16::MAX) - 64 {
        return None;
    }
    // Ethernet: back to whoever sent it.
    let (dst_mac, rest) = frame.split_at_mut(6);
    dst_mac.swap_with_slice(&mut rest[..6]);
    frame[hdr..total].copy_from_slice(payload);
    let udp_len = (UDP + payload.len()) as u16;
    let udp_at = hdr - UDP;
    match (d.client.ip(), d.local.ip()) {
        (IpAddr::V4(client), IpAddr::V4(local)) => {
            let ip = &mut frame[ETH..ETH + IP4];
            ip[1] = 0; // DSCP/ECN
            ip[2..4].copy_from_slice(&(IP4 as u16 + udp_len).to_be_bytes());
            ip[4..6].copy_from_slice(&[0, 0]); // identification: unfragmented, DF set
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = HOPS;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&local.octets());
            ip[16..20].copy_from_slice(&client.octets());
            let c = fold(sum16(0, ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(client), IpAddr::V6(local)) => {
            let ip = &mut frame[ETH..ETH + IP6];
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[7] = HOPS;
            ip[8..24].copy_from_slice(&local.octets());
            ip[24..40].copy_from_slice(&client.octets());
        }
        _ => return None,
    }
    let udp = &mut frame[udp_at..total];
    udp[0..2].copy_from_slice(&d.local.port().to_be_bytes());
    udp[2..4].copy_from_slice(&d.client.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    // The pseudo-header: addresses, protocol, UDP length.
    let mut sum = match (d.local.ip(), d.client.ip()) {
        (IpAddr::V4(l), IpAddr::V4(c)) => sum16(sum16(0, &l.octets()), &c.octets()),
        (IpAddr::V6(l), IpAddr::V6(c)) => sum16(sum16(0, &l.octets()), &c.octets()),
        _ => return None,
    };
    sum += u32::from(PROTO_UDP) + u32::from(udp_len);
    let c = match fold(sum16(sum, udp)) {
        0 => 0xffff, // RFC 768: a computed zero is sent as all ones
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a client's kernel sends it, with correct checksums, built independently of
    /// `write_reply` (socket2 cannot give us one without root, so the bytes are spelt out).
    fn frame4(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            2, 0, 0, 0, 0, 1, // dst MAC (the server)
            2, 0, 0, 0, 0, 2, // src MAC (the client)
            0x08, 0x00,
        ];
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 63, 17, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let c = fold(sum16(0, &ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        let ulen = (8 + payload.len()) as u16;
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&ulen.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// Verifies a frame's checksums the way a receiver does: the sum over the covered bytes,
    /// checksum field included, folds to zero.
    fn checksums_hold(f: &[u8]) -> bool {
        let d = parse(f).expect("a UDP frame");
        let udp = &f[d.header_len() - UDP..d.payload.end];
        let pseudo = match (d.client.ip(), d.local.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let ip_ok = fold(sum16(0, &f[ETH..ETH + IP4])) == 0;
                ip_ok.then(|| sum16(sum16(0, &a.octets()), &b.octets()))
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => Some(sum16(sum16(0, &a.octets()), &b.octets())),
            _ => None,
        };
        pseudo.is_some_and(|p| fold(sum16(p + 17 + udp.len() as u32, udp)) == 0)
    }

    #[test]
    fn ipv4_query_parses_and_its_reply_goes_back_with_valid_checksums() {
        let q = frame4(b"query-bytes");
        let d = parse(&q).expect("parses");
        assert_eq!(d.client, "192.0.2.2:40000".parse().unwrap());
        assert_eq!(d.local, "192.0.2.1:53".parse().unwrap());
        assert_eq!(&q[d.payload.clone()], b"query-bytes");
        let mut buf = q.clone();
        buf.resize(2048, 0xee);
        let n = write_reply(&mut buf, &d, b"a longer reply, odd length", 1514).unwrap();
        let r = &buf[..n];
        assert_eq!(&r[0..6], &q[6..12], "to the client's MAC");
        assert_eq!(&r[6..12], &q[0..6], "from ours");
        let back = parse(r).expect("the reply parses");
        assert_eq!(back.client, d.local, "from our address and port");
        assert_eq!(back.local, d.client, "to the client's");
        assert_eq!(&r[back.payload.clone()], b"a longer reply, odd length");
        assert_eq!(r[ETH + 8], HOPS);
        assert!(checksums_hold(r));
    }

    #[test]
    fn ipv6_reply_has_a_valid_udp_checksum() {
        let payload = b"v6 query";
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[17, 64]);
        let client: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let local: Ipv6Addr = "2001:db8::1".parse().unwrap();
        f.extend_from_slice(&client.octets());
        f.extend_from_slice(&local.octets());
        f.extend_from_slice(&5353u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        let d = parse(&f).unwrap();
        assert_eq!(d.client, SocketAddr::new(client.into(), 5353));
        let mut buf = f.clone();
        buf.resize(1600, 0);
        let n = write_reply(&mut buf, &d, b"reply!!", 1514).unwrap();
        let back = parse(&buf[..n]).unwrap();
        assert_eq!(back.client, SocketAddr::new(local.into(), 53));
        assert_eq!(back.local, SocketAddr::new(client.into(), 5353));
        assert!(checksums_hold(&buf[..n]));
    }

    #[test]
    fn what_is_not_a_plain_udp_datagram_is_refused() {
        let q = frame4(b"x");
        // Truncated anywhere.
        for cut in 0..q.len() {
            assert!(parse(&q[..cut]).is_none(), "cut at {cut}");
        }
        let with = |at: usize, v: u8| {
            let mut f = q.clone();
            f[at] = v;
            parse(&f)
        };
        assert!(with(ETH, 0x46).is_none(), "IP options");
        assert!(with(ETH + 9, 6).is_none(), "TCP");
        assert!(with(ETH + 6, 0x20).is_none(), "more fragments");
        assert!(with(ETH + 7, 1).is_none(), "a fragment offset");
        assert!(with(12, 0x81).is_none(), "a VLAN tag");
        assert!(with(ETH + 2, 0xff).is_none(), "IP length past the frame");
        assert!(
            with(ETH + 20 + 4, 0xff).is_none(),
            "UDP length past the packet"
        );
        // Ethernet padding after a short packet is not payload.
        let mut padded = q.clone();
        padded.resize(60, 0);
        assert_eq!(&padded[parse(&padded).unwrap().payload], b"x");
    }

    #[test]
    fn a_reply_larger_than_the_link_or_the_buffer_is_refused() {
        let q = frame4(b"q");
        let d = parse(&q).unwrap();
        let mut buf = q.clone();
        buf.resize(2048, 0);
        let big = vec![0u8; 1500];
        assert!(
            write_reply(&mut buf, &d, &big, 1514).is_none(),
            "past the MTU"
        );
        assert!(write_reply(&mut buf, &d, &big, 4096).is_some());
        let mut small = q.clone();
        assert!(
            write_reply(&mut small, &d, &big, 4096).is_none(),
            "past the buffer"
        );
    }
}
