//! Connection files (`.vv`, virt-viewer's format), which the broker hands out and admins use:
//! `tessera-client desktop.vv` opens the desktop directly, as remote-viewer would. A file with
//! `delete-this-file=1` (it holds a one-time ticket) is removed once read.

use std::path::Path;

use crate::broker::{Display, Granted};

/// Why a file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VvError {
    /// Unreadable.
    #[error("cannot read {path}: {why}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// Not a SPICE connection file.
    #[error("{0}")]
    Invalid(String),
}

/// A desktop described by a connection file.
pub fn parse(text: &str) -> Result<(Granted, bool), VvError> {
    let mut in_section = false;
    let (mut host, mut port, mut tls_port, mut password, mut title, mut ca) =
        (None, None, None, None, None, None);
    let mut kind = None;
    let mut delete = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[virt-viewer]";
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if !in_section {
            continue;
        }
        let v = v.trim().to_string();
        let port_of = |v: &str| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| VvError::Invalid(format!("{k}={v} is not a port")))
        };
        match k.trim() {
            "type" => kind = Some(v),
            "host" => host = Some(v),
            "port" => port = Some(port_of(&v)?),
            "tls-port" => tls_port = Some(port_of(&v)?),
            "password" => password = Some(v),
            "title" => title = Some(v),
            "ca" => ca = Some(v.replace("\\n", "\n")),
            "delete-this-file" => delete = v == "1",
            _ => {}
        }
    }
    if kind.as_deref() != Some("spice") {
        return Err(VvError::Invalid(
            "not a SPICE connection file ([virt-viewer] with type=spice)".into(),
        ));
    }
    let host = host.ok_or_else(|| VvError::Invalid("the file names no host".into()))?;
    if port.is_none() && tls_port.is_none() {
        return Err(VvError::Invalid("the file names no port".into()));
    }
    let granted = Granted {
        session_id: String::new(),
        session_token: String::new(),
        desktop: title.unwrap_or_else(|| host.clone()),
        pool: "connection file".into(),
        ticket: password.unwrap_or_default(),
        reconnected: false,
        display: Some(Display {
            host,
            port,
            tls_port,
            ca,
        }),
        tunnel: false,
    };
    Ok((granted, delete))
}

/// Reads `path` (and removes it when it asks to be).
pub fn open(path: &Path) -> Result<Granted, VvError> {
    let text = std::fs::read_to_string(path).map_err(|e| VvError::Read {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    let (granted, delete) = parse(&text)?;
    if delete {
        let _ = std::fs::remove_file(path);
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brokers_files_parse() {
        let (g, delete) = parse(
            "[virt-viewer]\ntype=spice\nhost=10.0.0.5\npassword=T1cket\ntitle=fin-001\n\
             delete-this-file=1\ntls-port=5902\nsecure-channels=all\n\
             ca=-----BEGIN CERTIFICATE-----\\nAAA\\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(delete);
        assert_eq!(
            (g.desktop.as_str(), g.ticket.as_str()),
            ("fin-001", "T1cket")
        );
        let d = g.display.unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.tls_port),
            ("10.0.0.5", None, Some(5902))
        );
        assert_eq!(
            d.ca.as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----")
        );
    }

    #[test]
    fn bad_files_say_why() {
        for (text, why) in [
            ("[virt-viewer]\ntype=vnc\nhost=a\nport=1\n", "not a SPICE"),
            ("[virt-viewer]\ntype=spice\nport=1\n", "no host"),
            ("[virt-viewer]\ntype=spice\nhost=a\n", "no port"),
            (
                "[virt-viewer]\ntype=spice\nhost=a\nport=99999\n",
                "not a port",
            ),
            ("[other]\ntype=spice\nhost=a\nport=1\n", "not a SPICE"),
            ("", "not a SPICE"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
