//! remote-viewer connection files (`.vv`): what a user's browser downloads and
//! remote-viewer (virt-viewer) opens, with the one-time ticket as the password so that no
//! prompt appears, and TLS details when the display needs them.

use tessera_agent::display::DisplayEndpoint;

/// The MIME type virt-viewer registers for connection files.
pub const MIME: &str = "application/x-virt-viewer";

/// One line's value: no line breaks (a value cannot start another key).
fn value(s: &str) -> String {
    s.chars().filter(|c| *c != '\n' && *c != '\r').collect()
}

/// The file for `display`, opened with `ticket`, titled `title`.
pub fn file(display: &DisplayEndpoint, ticket: &str, title: &str) -> String {
    let mut f = format!(
        "[virt-viewer]\ntype=spice\nhost={}\npassword={}\ntitle={}\ndelete-this-file=1\n\
         release-cursor=shift+f12\n",
        value(&display.host),
        value(ticket),
        value(title)
    );
    if let Some(p) = display.port {
        f.push_str(&format!("port={p}\n"));
    }
    if let Some(p) = display.tls_port {
        f.push_str(&format!("tls-port={p}\nsecure-channels=all\n"));
    }
    if let Some(ca) = &display.ca {
        // virt-viewer reads the PEM on one line with "\n" escapes.
        f.push_str(&format!("ca={}\n", ca.trim_end().replace('\n', "\\n")));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_files() {
        let plain = DisplayEndpoint {
            host: "127.0.0.1".into(),
            port: Some(5901),
            tls_port: None,
            ca: None,
        };
        let f = file(&plain, "T1cket", "fin-001\nport=1");
        assert!(f.starts_with("[virt-viewer]\ntype=spice\n"));
        assert!(f.contains("\nport=5901\n") && f.contains("\npassword=T1cket\n"));
        assert!(
            f.contains("\ntitle=fin-001port=1\n"),
            "no injected key: {f}"
        );
        assert!(!f.contains("tls-port"));
        let tls = DisplayEndpoint {
            host: "host-1.corp".into(),
            port: None,
            tls_port: Some(5902),
            ca: Some("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n".into()),
        };
        let f = file(&tls, "T", "fin-002");
        assert!(f.contains("\ntls-port=5902\nsecure-channels=all\n"));
        assert!(f.contains("\nca=-----BEGIN CERTIFICATE-----\\nAAA\\n-----END CERTIFICATE-----\n"));
        assert!(!f.contains("\nport="));
    }
}
