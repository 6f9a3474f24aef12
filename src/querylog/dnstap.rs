//! dnstap messages (<https://dnstap.info>, `dnstap.proto`): the few messages an authoritative
//! server sends, derived by hand with prost's derive macros. Generating them with prost-build
//! would need `protoc` on every build machine and CI; these five types are the whole schema
//! that AUTH_QUERY/AUTH_RESPONSE use, with the field numbers and types of `dnstap.proto`, so
//! any dnstap reader decodes them (`tests/querylog.rs` runs BIND's `dnstap-read` on them).
//!
//! The writer thread does not build those structs: [`Exchange::encode`] writes the same bytes
//! with prost's field encoders straight into a reused buffer. The structs cost five heap copies
//! per message (addresses, identity, version, the DNS messages), which made the writer slower
//! than the DNS thread it follows under `all`; the tests check the two encodings agree byte for
//! byte, so the derived types stay the schema's reference (and the tests' decoder).

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::encoding::{encode_key, encode_varint, WireType};

use crate::dns::Transport;

/// `dnstap.Dnstap`: the envelope of every message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dnstap {
    /// The server's identity: the site id.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub identity: Option<Vec<u8>>,
    /// The server's version: `meridian <version>`.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub version: Option<Vec<u8>>,
    /// Free-form: meridian puts the policy and service that answered here (responses only).
    #[prost(bytes = "vec", optional, tag = "3")]
    pub extra: Option<Vec<u8>>,
    #[prost(message, optional, tag = "14")]
    pub message: Option<Message>,
    #[prost(enumeration = "DnstapType", required, tag = "15")]
    pub r#type: i32,
}

/// `dnstap.Dnstap.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DnstapType {
    Message = 1,
}

/// `dnstap.SocketFamily`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SocketFamily {
    Inet = 1,
    Inet6 = 2,
}

/// `dnstap.SocketProtocol` (the values meridian uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SocketProtocol {
    Udp = 1,
    Tcp = 2,
}

/// `dnstap.Message.Type` (the values an authoritative server sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    AuthQuery = 1,
    AuthResponse = 2,
}

/// `dnstap.Message`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(enumeration = "MessageType", required, tag = "1")]
    pub r#type: i32,
    #[prost(enumeration = "SocketFamily", optional, tag = "2")]
    pub socket_family: Option<i32>,
    #[prost(enumeration = "SocketProtocol", optional, tag = "3")]
    pub socket_protocol: Option<i32>,
    /// The client's address (the initiator of the query).
    #[prost(bytes = "vec", optional, tag = "4")]
    pub query_address: Option<Vec<u8>>,
    /// The server's address (the responder).
    #[prost(bytes = "vec", optional, tag = "5")]
    pub response_address: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "6")]
    pub query_port: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub response_port: Option<u32>,
    #[prost(uint64, optional, tag = "8")]
    pub query_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "9")]
    pub query_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub query_message: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "11")]
    pub query_zone: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "12")]
    pub response_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "13")]
    pub response_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "14")]
    pub response_message: Option<Vec<u8>>,
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn split_time(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// What both messages of one query share.
pub struct Exchange<'a> {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub query_time: SystemTime,
    pub response_time: SystemTime,
    pub identity: Option<&'a [u8]>,
    pub version: &'a [u8],
}

impl Exchange<'_> {
    fn message(&self, kind: MessageType) -> Message {
        // IPv4-mapped client addresses (a dual-stack socket) are reported as IPv4, which is
        // what they are and what readers print.
        let client = self.client.ip().to_canonical();
        let family = if client.is_ipv4() {
            SocketFamily::Inet
        } else {
            SocketFamily::Inet6
        };
        let (qs, qn) = split_time(self.query_time);
        Message {
            r#type: kind as i32,
            socket_family: Some(family as i32),
            socket_protocol: Some(match self.transport {
                Transport::Udp => SocketProtocol::Udp as i32,
                Transport::Tcp => SocketProtocol::Tcp as i32,
            }),
            query_address: Some(addr_bytes(client)),
            response_address: Some(addr_bytes(self.server.ip().to_canonical())),
            query_port: Some(self.client.port().into()),
            response_port: Some(self.server.port().into()),
            query_time_sec: Some(qs),
            query_time_nsec: Some(qn),
            ..Message::default()
        }
    }

    fn envelope(&self, message: Message, extra: Option<Vec<u8>>) -> Dnstap {
        Dnstap {
            identity: self.identity.map(<[u8]>::to_vec),
            version: Some(self.version.to_vec()),
            extra,
            message: Some(message),
            r#type: DnstapType::Message as i32,
        }
    }

    /// Appends one `dnstap.Dnstap` of `kind` carrying `dns` (the query for AUTH_QUERY, the
    /// response for AUTH_RESPONSE) to `out`, with `inner` as scratch for the nested message:
    /// the bytes `prost::Message::encode` gives for [`Exchange::query`] / [`Exchange::response`],
    /// without their allocations.
    pub fn encode(
        &self,
        kind: MessageType,
        dns: &[u8],
        extra: Option<&[u8]>,
        inner: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) {
        let client = self.client.ip().to_canonical();
        let family = if client.is_ipv4() {
            SocketFamily::Inet
        } else {
            SocketFamily::Inet6
        };
        let protocol = match self.transport {
            Transport::Udp => SocketProtocol::Udp,
            Transport::Tcp => SocketProtocol::Tcp,
        };
        let (qs, qn) = split_time(self.query_time);
        inner.clear();
        put_varint(1, kind as u64, inner);
        put_varint(2, family as u64, inner);
        put_varint(3, protocol as u64, inner);
        put_addr(4, client, inner);
        put_addr(5, self.server.ip().to_canonical(), inner);
        put_varint(6, self.client.port().into(), inner);
        put_varint(7, self.server.port().into(), inner);
        put_varint(8, qs, inner);
        put_fixed32(9, qn, inner);
        match kind {
            MessageType::AuthQuery => put_bytes(10, dns, inner),
            MessageType::AuthResponse => {
                let (rs, rn) = split_time(self.response_time);
                put_varint(12, rs, inner);
                put_fixed32(13, rn, inner);
                put_bytes(14, dns, inner);
            }
        }
        if let Some(id) = self.identity {
            put_bytes(1, id, out);
        }
        put_bytes(2, self.version, out);
        if let Some(x) = extra {
            put_bytes(3, x, out);
        }
        put_bytes(14, inner, out);
        put_varint(15, DnstapType::Message as u64, out);
    }

    /// The AUTH_QUERY message.
    pub fn query(&self, query: Vec<u8>) -> Dnstap {
        let mut m = self.message(MessageType::AuthQuery);
        m.query_message = Some(query);
        self.envelope(m, None)
    }

    /// The AUTH_RESPONSE message; `extra` says which policy and service answered.
    pub fn response(&self, response: Vec<u8>, extra: Option<Vec<u8>>) -> Dnstap {
        let mut m = self.message(MessageType::AuthResponse);
        let (rs, rn) = split_time(self.response_time);
        m.response_time_sec = Some(rs);
        m.response_time_nsec = Some(rn);
        m.response_message = Some(response);
        self.envelope(m, extra)
    }
}

fn put_varint(tag: u32, v: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(v, buf);
}

fn put_fixed32(tag: u32, v: u32, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(tag: u32, v: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(v.len() as u64, buf);
    buf.extend_from_slice(v);
}

fn put_addr(tag: u32, a: IpAddr, buf: &mut Vec<u8>) {
    match a {
        IpAddr::V4(a) => put_bytes(tag, &a.octets(), buf),
        IpAddr::V6(a) => put_bytes(tag, &a.octets(), buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn messages_round_trip_with_their_field_numbers() {
        let x = Exchange {
            transport: Transport::Udp,
            client: "[::ffff:192.0.2.7]:5353".parse().unwrap(),
            server: "127.0.0.1:53".parse().unwrap(),
            query_time: UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5),
            response_time: UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 9),
            identity: Some(b"site1"),
            version: b"meridian 0",
        };
        let q = x.query(vec![1, 2, 3]);
        let bytes = q.encode_to_vec();
        // identity (field 1, bytes) is first: tag 0x0a, then its length.
        assert_eq!(&bytes[..2], &[0x0a, 5]);
        let back = Dnstap::decode(&bytes[..]).unwrap();
        let m = back.message.unwrap();
        assert_eq!(m.r#type, MessageType::AuthQuery as i32);
        assert_eq!(m.socket_family, Some(SocketFamily::Inet as i32));
        assert_eq!(m.query_address, Some(vec![192, 0, 2, 7]));
        assert_eq!(m.query_port, Some(5353));
        assert_eq!(m.query_time_nsec, Some(5));
        let r = x.response(vec![4], Some(b"x".to_vec()));
        let m = Dnstap::decode(&r.encode_to_vec()[..])
            .unwrap()
            .message
            .unwrap();
        assert_eq!(m.r#type, MessageType::AuthResponse as i32);
        assert_eq!(m.response_time_nsec, Some(9));
        assert_eq!(m.response_message, Some(vec![4]));
    }

    #[test]
    fn direct_encoding_is_the_derived_encoding() {
        let (mut inner, mut out) = (Vec::new(), Vec::new());
        for (client, identity, transport) in [
            (
                "[::ffff:192.0.2.7]:5353",
                Some(&b"site1"[..]),
                Transport::Udp,
            ),
            ("[2001:db8::1]:65535", None, Transport::Tcp),
            ("192.0.2.1:1", Some(&b""[..]), Transport::Udp),
        ] {
            let x = Exchange {
                transport,
                client: client.parse().unwrap(),
                server: "[::1]:53".parse().unwrap(),
                query_time: UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 999_999_999),
                response_time: UNIX_EPOCH + std::time::Duration::new(1_700_000_001, 0),
                identity,
                version: b"meridian 0",
            };
            let query = vec![7u8; 300];
            out.clear();
            x.encode(MessageType::AuthQuery, &query, None, &mut inner, &mut out);
            assert_eq!(out, x.query(query.clone()).encode_to_vec());
            for extra in [None, Some(&b"policy=geo service=www.example.com"[..])] {
                out.clear();
                x.encode(
                    MessageType::AuthResponse,
                    &[1, 2],
                    extra,
                    &mut inner,
                    &mut out,
                );
                assert_eq!(
                    out,
                    x.response(vec![1, 2], extra.map(<[u8]>::to_vec))
                        .encode_to_vec()
                );
            }
        }
    }
}
