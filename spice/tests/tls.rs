//! tessera-spice with TLS only: no plain-text listener; a plain-text SPICE link to the TLS
//! port gets no SPICE answer; remote-viewer, trusting the CA, gets in over TLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tessera_spice::{Compression, Config, Rect, Server, TlsFiles};

#[test]
fn a_tls_only_server_serves_tls_and_refuses_plain_text() {
    if !x_tools() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tessera-spice-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A CA and a server certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let files = TlsFiles {
        port: free_port(),
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();

    let x = Xvfb::start();
    let rec = Arc::new(Recorder::default());
    let cfg = Config {
        name: "tessera-tls".into(),
        address: "127.0.0.1".parse().unwrap(),
        port: None,
        tls: Some(files.clone()),
        compression: Compression::AutoGlz,
    };
    let mut server = Server::start(&cfg, rec.clone(), W, H).unwrap();
    let (_, fb) = picture(W, H);
    server.update(
        &fb,
        (W * 4) as usize,
        &[Rect {
            x: 0,
            y: 0,
            width: W,
            height: H,
        }],
    );
    server
        .set_ticket("tls-ticket", Duration::from_secs(60))
        .unwrap();

    // A plain-text SPICE link to the TLS port gets no SPICE answer: the server ends the
    // connection (at most a TLS alert first); silence until the timeout fails the test.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", files.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut link = b"REDQ".to_vec();
        link.extend_from_slice(&2u32.to_le_bytes());
        link.extend_from_slice(&2u32.to_le_bytes());
        link.extend_from_slice(&18u32.to_le_bytes());
        link.extend_from_slice(&[0; 18]);
        s.write_all(&link).unwrap();
        let mut reply = Vec::new();
        match s.read_to_end(&mut reply) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the TLS port neither answered nor closed a plain-text link: {e}"),
        }
        assert!(
            reply.is_empty() || reply[0] == 0x15,
            "a plain-text link got something other than a TLS alert: {:02x?}",
            &reply[..reply.len().min(16)]
        );
    }
    assert_eq!(rec.logins(), 0);

    // remote-viewer over TLS, trusting the CA.
    let ca_line = ca.pem().trim_end().replace('\n', "\\n");
    let vv = vv_file(
        &dir,
        "tls",
        &format!(
            "host=127.0.0.1\ntls-port={}\npassword=tls-ticket\nca={ca_line}\nsecure-channels=all\n",
            files.port
        ),
    );
    let rv = Proc(x.cmd("remote-viewer").arg(&vv).spawn().unwrap());
    assert!(
        rec.wait_logins(1, Duration::from_secs(20)),
        "no TLS session"
    );
    let main_tls = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.channel_type == 1)
        .all(|e| e.tls);
    assert!(main_tls, "the main channel was not TLS");
    // The display and cursor channels (served by the display worker) must be up first: see
    // `Recorder::wait_channels`.
    assert!(
        rec.wait_channels(2, 1, Duration::from_secs(20))
            && rec.wait_channels(4, 1, Duration::from_secs(20)),
        "no display or cursor channel"
    );
    drop(rv);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
