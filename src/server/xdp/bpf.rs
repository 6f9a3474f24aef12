//! The XDP program and the `bpf(2)` calls around it, without libbpf: an XSKMAP (queue → AF_XDP
//! socket), the program that redirects UDP to our addresses and port into it and passes
//! everything else to the kernel, and its attachment as a BPF link.
//!
//! The program is a few dozen instructions assembled here at start, with the listen addresses
//! and port as immediates, so no eBPF toolchain or object file is needed to build or run it.
//! libxdp's default AF_XDP program (what the crates load) redirects *every* packet of a queue
//! with a socket, TCP and ARP included; the SPEC wants everything but our queries left to the
//! kernel, so a filtering program is needed anyway (Knot ships its own for the same reason).
//!
//! The attachment is a BPF link (`BPF_LINK_CREATE`, Linux 5.9+), owned by a file descriptor
//! of this process: when the process ends, however it ends (SIGKILL, a panic, a crash), the
//! kernel closes the descriptor and detaches the program. Nothing is left behind for the next
//! start to clean, unlike a netlink attachment, which outlives its process (Knot's pitfall).
//! A program attached by netlink (another server's, or one attached by hand) is left alone at
//! start: `serve` says so (an XDP program is already attached) and uses the sockets.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The program's name in the kernel (`bpftool prog`, `ip link`): how a stale one is known.
pub const PROG_NAME: &str = "meridian_xdp";

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_SKB_MODE`: the generic hook, which every driver has.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: the driver's own hook (native XDP).
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_PASS: i32 = 2;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

fn sys_bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<i32> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of the size we pass; the kernel reads
    // and writes within it, and reads the buffers it points at, which the callers keep alive.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

fn put32(a: &mut [u8; 128], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(a: &mut [u8; 128], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}
fn put_name(a: &mut [u8; 128], at: usize, name: &str) {
    let n = name.len().min(15);
    a[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
}
fn owned(fd: i32) -> OwnedFd {
    // SAFETY: a descriptor the kernel just returned to us and nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A new XSKMAP with `entries` slots (one per queue).
pub fn xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut a = [0u8; 128];
    put32(&mut a, 0, BPF_MAP_TYPE_XSKMAP);
    put32(&mut a, 4, 4); // key: queue index
    put32(&mut a, 8, 4); // value: socket fd
    put32(&mut a, 12, entries.max(1));
    put_name(&mut a, 28, "meridian_xsks");
    sys_bpf(BPF_MAP_CREATE, &mut a).map(owned)
}

/// Puts the AF_XDP socket `sock` in slot `queue` of `map`.
pub fn set_socket(map: &OwnedFd, queue: u32, sock: i32) -> io::Result<()> {
    let key = queue;
    let value = sock as u32;
    let mut a = [0u8; 128];
    put32(&mut a, 0, map.as_raw_fd() as u32);
    put64(&mut a, 8, &key as *const u32 as u64);
    put64(&mut a, 16, &value as *const u32 as u64);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// One eBPF instruction.
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The assembler: instructions, with forward jumps to named labels patched at the end.
struct Asm {
    insns: Vec<Insn>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

// Opcodes (class | op | source). Registers: r0 return, r1-r5 arguments, r6 callee-saved.
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const AND64_K: u8 = 0x57;
const JGT_X: u8 = 0x2d;
/// 32-bit compares (BPF_JMP32, Linux 5.1+): the immediate is not sign-extended against a
/// zero-extended load, so an address with its top bit set compares right.
const JEQ32_K: u8 = 0x16;
const JNE32_K: u8 = 0x56;
const JA: u8 = 0x05;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: dst | src << 4,
            off,
            imm,
        });
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: &'static str) {
        self.fixups.push((self.insns.len(), to));
        self.op(code, dst, src, 0, imm);
    }
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, name) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, i)| i)
                .expect("every jump's label is defined below it");
            self.insns[at].off = (target - at - 1) as i16;
        }
        self.insns
    }
}

/// A 16- or 32-bit field of the packet as the program loads it: network byte order read as a
/// host-order integer, which is what a `BPF_LDX` of those bytes gives.
fn ne16(v: u16) -> i32 {
    i32::from(u16::from_ne_bytes(v.to_be_bytes()))
}
fn ne32(b: [u8; 4]) -> i32 {
    u32::from_ne_bytes(b) as i32
}

/// The addresses the program takes queries for. `any4`/`any6`: a wildcard listen address.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub port: u16,
    pub any4: bool,
    pub v4: Vec<Ipv4Addr>,
    pub any6: bool,
    pub v6: Vec<Ipv6Addr>,
}

/// The instructions of the filter: Ethernet (no VLAN) → IPv4 without options and not a
/// fragment, or IPv6 with UDP as the next header → destination one of ours → UDP destination
/// port ours → `bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)` (the flags' XDP_PASS: a queue
/// without a socket passes the frame to the kernel). Everything else: XDP_PASS.
fn program(map_fd: i32, t: &Targets) -> Vec<Insn> {
    let mut a = Asm::new();
    // r6 = ctx; r2 = data; r3 = data_end (struct xdp_md: data at 0, data_end at 4).
    a.op(MOV64_X, 6, 1, 0, 0);
    a.op(LDX_W, 2, 1, 0, 0);
    a.op(LDX_W, 3, 1, 4, 0);
    // Ethernet + IPv4 + UDP must be there before anything is read.
    a.op(MOV64_X, 4, 2, 0, 0);
    a.op(ADD64_K, 4, 0, 0, 14 + 20 + 8);
    a.jump(JGT_X, 4, 3, 0, "pass");
    a.op(LDX_H, 5, 2, 12, 0);
    a.jump(JEQ32_K, 5, 0, ne16(0x86dd), "ip6");
    a.jump(JNE32_K, 5, 0, ne16(0x0800), "pass");
    if t.any4 || !t.v4.is_empty() {
        a.op(LDX_B, 5, 2, 14, 0);
        a.jump(JNE32_K, 5, 0, 0x45, "pass");
        a.op(LDX_B, 5, 2, 14 + 9, 0);
        a.jump(JNE32_K, 5, 0, 17, "pass");
        a.op(LDX_H, 5, 2, 14 + 6, 0);
        a.op(AND64_K, 5, 0, 0, ne16(0x3fff));
        a.jump(JNE32_K, 5, 0, 0, "pass");
        if !t.any4 {
            a.op(LDX_W, 5, 2, 14 + 16, 0);
            for addr in &t.v4 {
                a.jump(JEQ32_K, 5, 0, ne32(addr.octets()), "port4");
            }
            a.jump(JA, 0, 0, 0, "pass");
        }
        a.label("port4");
        a.op(LDX_H, 5, 2, 14 + 20 + 2, 0);
        a.jump(JEQ32_K, 5, 0, ne16(t.port), "redirect");
    }
    a.jump(JA, 0, 0, 0, "pass");
    a.label("ip6");
    if t.any6 || !t.v6.is_empty() {
        a.op(MOV64_X, 4, 2, 0, 0);
        a.op(ADD64_K, 4, 0, 0, 14 + 40 + 8);
        a.jump(JGT_X, 4, 3, 0, "pass");
        a.op(LDX_B, 5, 2, 14, 0);
        a.op(AND64_K, 5, 0, 0, 0xf0);
        a.jump(JNE32_K, 5, 0, 0x60, "pass");
        a.op(LDX_B, 5, 2, 14 + 6, 0);
        a.jump(JNE32_K, 5, 0, 17, "pass");
        if !t.any6 {
            // Each address: four 32-bit words; the first that differs moves to the next one.
            for (i, addr) in t.v6.iter().enumerate() {
                let next: &'static str = NEXT6[i.min(NEXT6.len() - 1)];
                for (w, word) in addr.octets().chunks_exact(4).enumerate() {
                    a.op(LDX_W, 5, 2, 14 + 24 + 4 * w as i16, 0);
                    let word = [word[0], word[1], word[2], word[3]];
                    a.jump(JNE32_K, 5, 0, ne32(word), next);
                }
                a.jump(JA, 0, 0, 0, "port6");
                a.label(next);
            }
            a.jump(JA, 0, 0, 0, "pass");
        }
        a.label("port6");
        a.op(LDX_H, 5, 2, 14 + 40 + 2, 0);
        a.jump(JEQ32_K, 5, 0, ne16(t.port), "redirect");
    }
    a.jump(JA, 0, 0, 0, "pass");
    a.label("redirect");
    a.op(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd);
    a.op(0, 0, 0, 0, 0);
    a.op(LDX_W, 2, 6, 16, 0); // ctx->rx_queue_index
    a.op(MOV64_K, 3, 0, 0, XDP_PASS);
    a.op(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP);
    a.op(EXIT, 0, 0, 0, 0);
    a.label("pass");
    a.op(MOV64_K, 0, 0, 0, XDP_PASS);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// Labels for "try the next IPv6 address" (the assembler takes static names). More listen
/// addresses per family than this are refused by [`load`].
const NEXT6: [&str; 8] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"];
/// Most specific addresses of one family the program compares.
pub const MAX_ADDRS: usize = NEXT6.len();

/// Loads the filter for `t`, redirecting into `map`. The verifier's log comes back in the
/// error when it refuses the program.
pub fn load(map: &OwnedFd, t: &Targets) -> io::Result<OwnedFd> {
    if t.v4.len() > MAX_ADDRS || t.v6.len() > MAX_ADDRS {
        return Err(io::Error::other(format!(
            "more than {MAX_ADDRS} listen addresses of one family"
        )));
    }
    let insns = program(map.as_raw_fd(), t);
    let raw: Vec<u8> = insns
        .iter()
        .flat_map(|i| {
            let mut b = [0u8; 8];
            b[0] = i.code;
            b[1] = i.regs;
            b[2..4].copy_from_slice(&i.off.to_ne_bytes());
            b[4..8].copy_from_slice(&i.imm.to_ne_bytes());
            b
        })
        .collect();
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut a = [0u8; 128];
    put32(&mut a, 0, BPF_PROG_TYPE_XDP);
    put32(&mut a, 4, insns.len() as u32);
    put64(&mut a, 8, raw.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put_name(&mut a, 48, PROG_NAME);
    match sys_bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            // Once more with the verifier's log, to say why.
            put32(&mut a, 24, 1);
            put32(&mut a, 28, log.len() as u32);
            put64(&mut a, 32, log.as_mut_ptr() as u64);
            let _ = sys_bpf(BPF_PROG_LOAD, &mut a);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(
                e.kind(),
                format!("the kernel refused the XDP program: {e}; {}", text.trim()),
            ))
        }
    }
}

/// Attaches `prog` to interface `ifindex` as a link with `flags` (driver or generic mode).
/// The returned descriptor is the attachment: dropping it detaches.
pub fn attach(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = [0u8; 128];
    put32(&mut a, 0, prog.as_raw_fd() as u32);
    put32(&mut a, 4, ifindex);
    put32(&mut a, 8, BPF_XDP);
    put32(&mut a, 12, flags);
    sys_bpf(BPF_LINK_CREATE, &mut a).map(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_in_exit() {
        let cases = [
            Targets {
                port: 53,
                any4: true,
                any6: true,
                ..Default::default()
            },
            Targets {
                port: 5353,
                v4: vec![
                    "192.0.2.1".parse().unwrap(),
                    "198.51.100.53".parse().unwrap(),
                ],
                v6: vec![
                    "2001:db8::1".parse().unwrap(),
                    "2001:db8::53".parse().unwrap(),
                ],
                ..Default::default()
            },
            Targets {
                port: 53,
                v4: vec!["10.0.0.200".parse().unwrap()],
                ..Default::default()
            },
        ];
        for t in cases {
            let p = program(3, &t);
            assert_eq!(p.last().unwrap().code, EXIT);
            for (i, insn) in p.iter().enumerate() {
                if insn.code & 0x07 == 0x05 || insn.code & 0x07 == 0x06 {
                    if insn.code == CALL || insn.code == EXIT {
                        continue;
                    }
                    let to = i as i64 + 1 + i64::from(insn.off);
                    assert!(
                        to > i as i64 && (to as usize) < p.len(),
                        "{t:?}: jump {i} → {to}"
                    );
                }
            }
        }
    }

    #[test]
    fn immediates_are_the_bytes_a_load_reads() {
        // What LDX_H of the bytes 08 00 gives on this host must equal the immediate.
        assert_eq!(ne16(0x0800), i32::from(u16::from_ne_bytes([0x08, 0x00])));
        assert_eq!(
            ne32([10, 0, 0, 200]),
            u32::from_ne_bytes([10, 0, 0, 200]) as i32
        );
    }
}
