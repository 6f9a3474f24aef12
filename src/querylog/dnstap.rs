//! dnstap messages (<https://dnstap.info>, `dnstap.proto`): the few messages an authoritative
//! server sends, derived by hand with prost's derive macros. Generating them with prost-build
//! would need `protoc` on every build machine and CI; these five types are the whole schema
//! that AUTH_QUERY/AUTH_RESPONSE use, with the field numbers and types of `dnstap.proto`, so
//! any dnstap reader decodes them (`tests/querylog.rs` runs BIND's `dnstap-read` on them).

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

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
}
