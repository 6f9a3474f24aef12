//! One log line per query, as text or as JSON, made on the query log's thread from the bytes
//! of the query and the response (parsing them here keeps that work off the DNS threads).
//!
//! The lines look like the rest of the log (`tracing`'s formats, as set up in `cli.rs`): text
//! is `<RFC 3339 time>  INFO meridian::query: query key=value ...`; JSON is one flat object
//! with `timestamp`, `level`, `message`, the fields, and `target`, as the JSON event lines are.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

use super::Entry;
use crate::dns::Transport;

/// The `target` of query lines.
pub const TARGET: &str = "meridian::query";

/// `2024-05-01T12:34:56.789012Z`: RFC 3339 in UTC with microseconds, as tracing prints it.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// The fields of one query line.
#[derive(Debug, Default, PartialEq)]
pub struct Fields {
    pub qname: Option<String>,
    pub qtype: Option<String>,
    pub rcode: String,
    /// `address/source-prefix` of the EDNS Client Subnet option, if the query had one.
    pub ecs: Option<String>,
    /// The addresses in the answer section (A and AAAA).
    pub answer: Vec<IpAddr>,
}

fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        9 => "NOTAUTH".into(),
        16 => "BADVERS".into(),
        n => format!("RCODE{n}"),
    }
}

fn qtype_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

/// Reads the line's fields from the query and response bytes. A query that does not parse
/// (answered FORMERR) has no name or type; the rcode then comes from the response header.
pub fn fields(query: &[u8], response: &[u8]) -> Fields {
    let mut f = Fields::default();
    if let Ok(q) = Message::from_vec(query) {
        if let Some(question) = q.queries.first() {
            f.qname = Some(question.name().to_ascii());
            f.qtype = Some(qtype_name(question.query_type()));
        }
        if let Some(EdnsOption::Subnet(ecs)) =
            q.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet))
        {
            f.ecs = Some(format!("{}/{}", ecs.addr(), ecs.source_prefix()));
        }
    }
    match Message::from_vec(response) {
        Ok(r) => {
            f.rcode = rcode_name(u16::from(r.metadata.response_code));
            for rr in &r.answers {
                match &rr.data {
                    RData::A(a) => f.answer.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => f.answer.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        Err(_) => f.rcode = rcode_name(response.get(3).map_or(0, |b| u16::from(b & 0x0f))),
    }
    f
}

/// Processing time in µs with one decimal: the fast path takes well under a microsecond.
fn micros(e: &Entry) -> String {
    format!("{:.1}", e.elapsed.as_nanos() as f64 / 1000.0)
}

fn transport(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

/// One text line (with its newline).
pub fn text(e: &Entry, site: Option<&str>, service: Option<&str>, out: &mut String) {
    let f = fields(e.query(), e.response());
    let answer = if f.answer.is_empty() {
        "-".to_string()
    } else {
        f.answer
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let _ = writeln!(
        out,
        "{}  INFO {TARGET}: query transport={} client={} port={} ecs={} qname={} qtype={} \
         rcode={} answer={} policy={} service={} site={} us={}",
        rfc3339(e.at),
        transport(e.transport),
        e.client.ip().to_canonical(),
        e.client.port(),
        f.ecs.as_deref().unwrap_or("-"),
        f.qname.as_deref().unwrap_or("-"),
        f.qtype.as_deref().unwrap_or("-"),
        f.rcode,
        answer,
        e.policy,
        service.unwrap_or("-"),
        site.unwrap_or("-"),
        micros(e),
    );
}

/// A JSON string (quoted and escaped) or `null`.
fn js(s: Option<&str>) -> String {
    s.map_or_else(
        || "null".to_string(),
        |s| serde_json::to_string(s).unwrap_or_else(|_| "null".into()),
    )
}

/// One JSON line (with its newline). Written by hand rather than through a map so that the
/// keys come in the order people read them, as in the other JSON log lines.
pub fn json(e: &Entry, site: Option<&str>, service: Option<&str>, out: &mut String) {
    let f = fields(e.query(), e.response());
    let answer: Vec<String> = f.answer.iter().map(|a| format!("\"{a}\"")).collect();
    let _ = writeln!(
        out,
        "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"message\":\"query\",\"transport\":\"{}\",\
         \"client\":\"{}\",\"port\":{},\"ecs\":{},\"qname\":{},\"qtype\":{},\"rcode\":{},\
         \"answer\":[{}],\"policy\":{},\"service\":{},\"site\":{},\"us\":{},\"target\":\"{TARGET}\"}}",
        rfc3339(e.at),
        transport(e.transport),
        e.client.ip().to_canonical(),
        e.client.port(),
        js(f.ecs.as_deref()),
        js(f.qname.as_deref()),
        js(f.qtype.as_deref()),
        js(Some(&f.rcode)),
        answer.join(","),
        js(Some(e.policy)),
        js(service),
        js(site),
        micros(e),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400 + 3661, 123_456_789);
        assert_eq!(rfc3339(t), "2000-02-29T01:01:01.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(rfc3339(t), "2024-12-31T23:59:59.000000Z");
    }

    #[test]
    fn garbage_has_no_name() {
        let f = fields(&[0; 5], &[0, 0, 0x80, 0x01]);
        assert_eq!(f.qname, None);
        assert_eq!(f.rcode, "FORMERR");
    }
}
