//! `vmm-api`: one request to a tessera-vmm control socket, for the nested harness's L1, whose
//! busybox has no HTTP client that speaks over a Unix socket.
//!
//! Usage: vmm-api METHOD SOCKET PATH [BODY]
//! Writes the response body to stdout; exits 0 for a 2xx answer, 1 otherwise (the status and
//! body then go to stderr), 2 on usage errors.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(3..=4).contains(&args.len()) {
        eprintln!("usage: vmm-api METHOD SOCKET PATH [BODY]");
        std::process::exit(2);
    }
    let body = args.get(3).map_or("", String::as_str);
    match request(&args[0], &args[1], &args[2], body) {
        Ok((status, answer)) if (200..300).contains(&status) => {
            let _ = std::io::stdout().write_all(&answer);
        }
        Ok((status, answer)) => {
            eprintln!("vmm-api: {status}: {}", String::from_utf8_lossy(&answer));
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("vmm-api: {e}");
            std::process::exit(1);
        }
    }
}

fn request(method: &str, socket: &str, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let rest = &raw[end + 4..];
    Ok((
        status,
        if chunked {
            dechunk(rest).ok_or_else(bad)?
        } else {
            rest.to_vec()
        },
    ))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}
