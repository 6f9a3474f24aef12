//! Walking DNS messages as bytes, for RRL, cookies and ECS: bounded, never trusting a length
//! or a pointer. (Lived in `rrl::wire`; cookies reading it tied cookie and rrl into a circle.)

/// Reads the (possibly compressed) name at `at` into `out`, lower-cased, in wire form;
/// returns its length and the offset after the name where it starts.
pub fn read_name(msg: &[u8], at: usize, out: &mut [u8; 255]) -> Option<(usize, usize)> {
    let (mut i, mut len, mut end, mut hops) = (at, 0usize, None, 0);
    loop {
        let b = *msg.get(i)? as usize;
        if b & 0xC0 == 0xC0 {
            hops += 1;
            if hops > 16 {
                return None;
            }
            end.get_or_insert(i + 2);
            i = (b & 0x3F) << 8 | *msg.get(i + 1)? as usize;
            continue;
        }
        if b & 0xC0 != 0 || len + 1 + b > out.len() {
            return None;
        }
        out[len] = b as u8;
        for (d, s) in out[len + 1..len + 1 + b]
            .iter_mut()
            .zip(msg.get(i + 1..i + 1 + b)?)
        {
            *d = s.to_ascii_lowercase();
        }
        len += 1 + b;
        i += 1 + b;
        if b == 0 {
            return Some((len, end.unwrap_or(i)));
        }
    }
}

/// The offset after the name at `at`.
pub fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..128 {
        let b = *msg.get(i)? as usize;
        if b & 0xC0 == 0xC0 {
            return Some(i + 2);
        }
        if b & 0xC0 != 0 {
            return None;
        }
        i += 1 + b;
        if b == 0 {
            return Some(i);
        }
    }
    None
}

/// The offset after the resource record at `at`.
pub fn skip_rr(msg: &[u8], at: usize) -> Option<usize> {
    let i = skip_name(msg, at)?;
    let rdlen = u16::from_be_bytes([*msg.get(i + 8)?, *msg.get(i + 9)?]) as usize;
    let end = i + 10 + rdlen;
    (end <= msg.len()).then_some(end)
}

/// The offset of the OPT record (its root owner byte) in the additional section.
pub fn find_opt(msg: &[u8]) -> Option<usize> {
    let c = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]));
    let (qd, an, ns, ar) = (c(4)?, c(6)?, c(8)?, c(10)?);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(msg, i)? + 4;
    }
    for _ in 0..u32::from(an) + u32::from(ns) {
        i = skip_rr(msg, i)?;
    }
    for _ in 0..ar {
        let t = skip_name(msg, i)?;
        if c(t)? == 41 {
            return Some(i);
        }
        i = skip_rr(msg, i)?;
    }
    None
}
