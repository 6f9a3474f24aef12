//! Text forms turned into bytes: a domain name into its lower-case wire form, base64 into
//! bytes. Read by the config's checks (TSIG keys) and by TSIG itself, so they sit below both.
//! (Lived in `secondary::tsig`, which re-exports them.)

/// A name in uncompressed, lower-case wire form; `None` when it is not a valid name.
pub fn wire_name(name: &str) -> Option<Vec<u8>> {
    let body = name.trim_end_matches('.');
    let mut out = Vec::with_capacity(body.len() + 2);
    if !body.is_empty() {
        for label in body.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

/// Decodes standard base64 (as in BIND/Knot key files); `None` on anything else.
pub fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (!out.is_empty()).then_some(out)
}
