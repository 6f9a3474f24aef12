mod common;
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

#[test]
fn soa_over_udp_and_tcp() {
    let s = TestServer::example();
    for r in [
        s.udp(&query("example.com.", RecordType::SOA)),
        s.tcp(&query("example.com.", RecordType::SOA)),
    ] {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].record_type(), RecordType::SOA);
    }
}
