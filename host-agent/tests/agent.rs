//! tessera-agent end to end on this machine: its HTTPS API with mutual TLS (certificates made
//! here with rcgen), linked clones in a real datastore, and real tessera-vmm processes running
//! a tiny guest on /dev/kvm with the clone as its virtio disk, found again after the agent
//! restarts.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_agent::config::AgentConfig;

#[tokio::test(flavor = "multi_thread")]
async fn only_the_brokers_certificate_gets_in() {
    let r = rig("tls");
    let (url, _task) = start(&r.cfg).await;
    let ok = r
        .client
        .get(format!("{url}/api/v1/host"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let host: Value = ok.json().await.unwrap();
    assert_eq!(host["name"], "test-host");
    assert!(host["memory_total"].as_u64().unwrap() > 0);
    assert_eq!(host["datastores"][0]["name"], "ds1");
    assert!(host["datastores"][0]["free"].as_u64().unwrap() > 0);
    // No client certificate: the handshake fails.
    let anonymous = client(&r.dir.join("ca.pem"), None);
    assert!(anonymous
        .get(format!("{url}/api/v1/host"))
        .send()
        .await
        .is_err());
    // A certificate from another CA: refused too.
    let rogue = Pki::new(&r.dir, "rogue-ca");
    let (c, k) = rogue.issue("rogue", false);
    let intruder = client(&r.dir.join("ca.pem"), Some((&c, &k)));
    assert!(intruder
        .get(format!("{url}/api/v1/host"))
        .send()
        .await
        .is_err());
    let metrics = r
        .client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tessera_agent_vms{state=\"running\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_clear_errors() {
    let r = rig("hostile");
    let (url, _task) = start(&r.cfg).await;
    let c = &r.client;
    let post = |path: &str, body: Value| c.post(format!("{url}{path}")).json(&body).send();
    let st = |resp: reqwest::Response| resp.status();
    assert_eq!(
        st(post(
            "/api/v1/datastores/ds1/disks",
            json!({"name": "../x", "base": "b"})
        )
        .await
        .unwrap()),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        st(post(
            "/api/v1/datastores/nope/disks",
            json!({"name": "x", "base": "b"})
        )
        .await
        .unwrap()),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        st(post(
            "/api/v1/datastores/ds1/disks",
            json!({"name": "x", "base": "missing.qcow2"})
        )
        .await
        .unwrap()),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        st(post("/api/v1/datastores/ds1/disks", json!({"bogus": 1}))
            .await
            .unwrap()),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // A base whose backing file points outside the datastore is refused by tessera-storage.
    let evil = r.ds.join("evil.qcow2");
    let out = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "/etc/passwd",
            "-F",
            "raw",
        ])
        .arg(&evil)
        .arg("1M")
        .status();
    // qemu-img is one of the test command's packages: without it this check cannot be
    // skipped silently.
    assert!(
        out.as_ref().is_ok_and(|s| s.success()),
        "qemu-img create (for the hostile base) failed: {out:?}"
    );
    let resp = post(
        "/api/v1/datastores/ds1/disks",
        json!({"name": "e2", "base": "evil.qcow2"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("outside"),
        "{body}"
    );
    let resp = c
        .get(format!("{url}/api/v1/vms/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("nope"));
    let bad_vm = json!({"name": "v1", "vcpus": 0, "memory_mib": 64, "kernel": "/nonexistent"});
    let resp = c
        .put(format!("{url}/api/v1/vms/v1"))
        .json(&bad_vm)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

/// Kernels, initrds and images to import come from the image library only: absolute paths
/// elsewhere, `..` and symlinks out of it are refused before anything reads them, and an
/// import lands as a new qcow2 image that never replaces an existing disk.
#[tokio::test(flavor = "multi_thread")]
async fn what_the_broker_names_is_confined_to_the_library() {
    let r = rig("library");
    let lib = r.dir.join("library");
    std::fs::write(lib.join("vmlinuz"), b"not really a kernel").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", lib.join("escape")).unwrap();
    // A raw golden image with a recognisable first sector.
    let mut raw = vec![0u8; 1 << 20];
    raw[..16].copy_from_slice(b"GOLDEN-RAW-IMAGE");
    std::fs::write(lib.join("gold.img"), &raw).unwrap();
    let (url, _task) = start(&r.cfg).await;
    let c = &r.client;

    for kernel in [
        "/etc/passwd".to_string(),
        "escape".into(),
        lib.join("../ds1/../library/escape").display().to_string(),
        "../state".into(),
    ] {
        let vm = json!({"name": "v1", "vcpus": 1, "memory_mib": 64, "kernel": kernel});
        let resp = c
            .put(format!("{url}/api/v1/vms/v1"))
            .json(&vm)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "kernel {kernel}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("image library"),
            "{body}"
        );
    }
    let vm = json!({"name": "v1", "vcpus": 1, "memory_mib": 64, "kernel": "vmlinuz",
                    "initrd": "/etc/shadow"});
    let resp = c
        .put(format!("{url}/api/v1/vms/v1"))
        .json(&vm)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "an initrd outside");

    let import = |source: String, name: &'static str| {
        c.post(format!("{url}/api/v1/datastores/ds1/imports"))
            .json(&json!({"name": name, "source": source}))
            .send()
    };
    for source in [
        "/etc/passwd".to_string(),
        lib.join("escape").display().to_string(),
    ] {
        let resp = import(source.clone(), "stolen.qcow2").await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "import of {source}");
    }
    assert!(!r.ds.join("stolen.qcow2").exists());
    let resp = import("gold.img".into(), "base.qcow2").await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    // It landed as qcow2 (its format known from now on) with the same content.
    let base = r.ds.join("base.qcow2");
    assert_eq!(
        tessera_storage::Format::probe(&base).unwrap(),
        tessera_storage::Format::Qcow2
    );
    let ds = tessera_storage::Datastore::new(&r.ds).unwrap();
    let disk =
        tessera_storage::Disk::open(&ds, &base, tessera_storage::Format::Qcow2, false).unwrap();
    let mut head = [0u8; 16];
    disk.read(&mut head, 0).unwrap();
    assert_eq!(&head, b"GOLDEN-RAW-IMAGE");
    // A second import under the same name never replaces the disk.
    let before = std::fs::read(&base).unwrap();
    let resp = import("gold.img".into(), "base.qcow2").await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(std::fs::read(&base).unwrap(), before);
}

/// A desktop that boots UEFI firmware gets its own variable store, made from the template
/// beside the firmware at its first start (0600) and kept as the guest left it at the next;
/// firmware without a template, or with a kernel or initrd, is refused at definition.
#[tokio::test(flavor = "multi_thread")]
async fn uefi_desktops_keep_their_own_variable_store() {
    let r = rig("uefi");
    let lib = r.dir.join("library");
    // A 4 MiB OVMF build's sizes; the VMM may refuse or fail them, the agent's part is the
    // same either way (its files are written before the VMM starts).
    std::fs::write(lib.join("OVMF_CODE_4M.fd"), vec![0u8; 0x37_c000]).unwrap();
    std::fs::write(lib.join("LONE_CODE.fd"), vec![0u8; 0x37_c000]).unwrap();
    let template = vec![0x5a; 0x8_4000];
    std::fs::write(lib.join("OVMF_VARS_4M.fd"), &template).unwrap();
    let (url, _task) = start(&r.cfg).await;
    let c = &r.client;
    let put = |vm: Value| c.put(format!("{url}/api/v1/vms/w1")).json(&vm).send();
    for bad in [
        json!({"name": "w1", "vcpus": 1, "memory_mib": 256, "firmware": "LONE_CODE.fd"}),
        json!({"name": "w1", "vcpus": 1, "memory_mib": 256}),
        json!({"name": "w1", "vcpus": 1, "memory_mib": 256, "firmware": "OVMF_CODE_4M.fd",
               "kernel": "OVMF_CODE_4M.fd"}),
        json!({"name": "w1", "vcpus": 1, "memory_mib": 256, "firmware": "OVMF_CODE_4M.fd",
               "initrd": "OVMF_VARS_4M.fd"}),
    ] {
        let resp = put(bad.clone()).await.unwrap();
        assert!(resp.status().is_client_error(), "{bad}: {}", resp.status());
    }
    let vm = json!({"name": "w1", "vcpus": 1, "memory_mib": 256,
                    "firmware": "OVMF_CODE_4M.fd", "hyperv": true});
    let resp = put(vm).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    let start_vm = || c.post(format!("{url}/api/v1/vms/w1/start")).send();
    // Whether this VMM can run the firmware does not matter here.
    let _ = start_vm().await.unwrap();
    let dir = r.cfg.state_dir.join("vms/w1");
    let store = dir.join("uefi-vars.fd");
    assert_eq!(std::fs::read(&store).unwrap(), template);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let toml = std::fs::read_to_string(dir.join("vm.toml")).unwrap();
    assert!(
        toml.contains("OVMF_CODE_4M.fd") && toml.contains("uefi-vars.fd"),
        "{toml}"
    );
    assert!(
        toml.contains("hyperv = true") && !toml.contains("kernel"),
        "{toml}"
    );
    // What the guest wrote stays: the next start does not copy the template again.
    let stop_vm = || {
        c.post(format!("{url}/api/v1/vms/w1/stop"))
            .json(&json!({"force": true}))
            .send()
    };
    let _ = stop_vm().await.unwrap();
    let mut written = template.clone();
    written[0x1000] = 0x42;
    std::fs::write(&store, &written).unwrap();
    let _ = start_vm().await.unwrap();
    assert_eq!(std::fs::read(&store).unwrap(), written);
    let _ = stop_vm().await.unwrap();
}

/// A desktop with a TPM: the VMM starts swtpm on `tpm/` in the VM's directory (0700), the
/// guest (a tiny TPM driver) starts the TPM and reads its clock, and the next start finds the
/// same TPM (its reset count one higher); deleting the VM deletes the TPM.
#[tokio::test(flavor = "multi_thread")]
async fn a_desktop_keeps_its_tpm_across_starts() {
    if std::process::Command::new("swtpm")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("TESSERA_REQUIRE_SWTPM").as_deref() != Ok("1"),
            "swtpm is required (TESSERA_REQUIRE_SWTPM=1) but missing"
        );
        eprintln!("\n*** SKIP a_desktop_keeps_its_tpm_across_starts: no swtpm ***\n");
        return;
    }
    use tessera_vmm::tiny_guest as tg;
    let r = rig("tpm");
    let kernel = r.dir.join("library/tpm.elf");
    std::fs::write(&kernel, tg::tpm_exercise(0)).unwrap();
    let (url, _task) = start(&r.cfg).await;
    let c = &r.client;
    let vm = json!({"name": "t1", "vcpus": 1, "memory_mib": 64, "kernel": kernel, "tpm": true});
    let resp = c
        .put(format!("{url}/api/v1/vms/t1"))
        .json(&vm)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let dir = r.cfg.state_dir.join("vms/t1");
    let console = dir.join("console.log");
    // The guest's console: "tpm\n" and its three responses, ReadClock's last.
    let want = 4 + tg::TPM_RESPONSE_LENS.iter().sum::<usize>();
    let mut counts = Vec::new();
    for _ in 0..2 {
        let resp = c
            .post(format!("{url}/api/v1/vms/t1/start"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text().await);
        let t0 = std::time::Instant::now();
        let out = loop {
            let out = std::fs::read(&console).unwrap_or_default();
            if out.len() >= want || t0.elapsed().as_secs() > 30 {
                break out;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(out.len(), want, "{out:02x?}");
        // The VMM started the TPM before the guest, as firmware does: the guest's own
        // Startup is a second one, refused with TPM_RC_INITIALIZE.
        let startup = &out[4..16];
        assert_eq!(&startup[6..10], &[0, 0, 1, 0], "Startup: {startup:02x?}");
        let clock = &out[want - 36..];
        counts.push(u32::from_be_bytes(clock[26..30].try_into().unwrap()));
        c.post(format!("{url}/api/v1/vms/t1/stop"))
            .json(&json!({"force": true}))
            .send()
            .await
            .unwrap();
        std::fs::remove_file(&console).unwrap();
    }
    assert_eq!(counts[1], counts[0] + 1, "{counts:?}");
    let toml = std::fs::read_to_string(dir.join("vm.toml")).unwrap();
    assert!(toml.contains("[tpm]"), "{toml}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("tpm"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let resp = c
        .delete(format!("{url}/api/v1/vms/t1"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert!(!dir.join("tpm").exists());
}

/// Without TLS the agent serves a Unix socket that only its user can reach (0600 in a 0700
/// directory from the moment it exists), and nothing on TCP.
#[tokio::test(flavor = "multi_thread")]
async fn without_tls_the_agent_serves_only_its_users_socket() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut r = rig("unix");
    let sock = r.dir.join("run/agent.sock");
    r.cfg.tls = None;
    r.cfg.listen = format!("unix:{}", sock.display());
    let cfg = r.cfg.clone();
    let _task = tokio::spawn(async move { tessera_agent::serve(cfg, None).await });
    let t0 = std::time::Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed().as_secs() < 10,
            "no socket at {}",
            sock.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sock), 0o600);
    assert_eq!(mode(sock.parent().unwrap()), 0o700);
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(b"GET /api/v1/host HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("test-host"), "{answer}");
    // A TCP listener without TLS is refused even when built in code.
    let mut tcp = r.cfg.clone();
    tcp.listen = "127.0.0.1:0".into();
    let e = tessera_agent::serve(tcp, None).await.unwrap_err();
    assert!(e.contains("needs [tls]"), "{e}");
}

fn kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        if std::env::var("TESSERA_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("/dev/kvm is required (TESSERA_REQUIRE_KVM=1)");
        }
        eprintln!("\n*** SKIP vms_survive_an_agent_restart: /dev/kvm unusable; this test did NOT run ***\n");
    }
    ok
}

#[tokio::test(flavor = "multi_thread")]
async fn vms_survive_an_agent_restart() {
    if !kvm() {
        return;
    }
    let r = rig("vms");
    let ds = tessera_storage::Datastore::new(&r.ds).unwrap();
    tessera_storage::ops::create(
        &ds,
        &r.ds.join("gold.qcow2"),
        64 << 20,
        tessera_storage::Format::Qcow2,
        65536,
    )
    .unwrap();
    let kernel = r.dir.join("library/tiny.elf");
    std::fs::write(
        &kernel,
        tessera_vmm::tiny_guest::milestones_then_idle(&[0x10, 0x20]),
    )
    .unwrap();

    let (url, task) = start(&r.cfg).await;
    let c = &r.client;
    let resp = c
        .post(format!("{url}/api/v1/datastores/ds1/disks"))
        .json(&json!({"name": "desk-01.qcow2", "base": "gold.qcow2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let spec = json!({
        "name": "desk-01", "vcpus": 1, "memory_mib": 64, "kernel": kernel,
        "disks": [{"datastore": "ds1", "file": "desk-01.qcow2"}]
    });
    let resp = c
        .put(format!("{url}/api/v1/vms/desk-01"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "{:?}",
        resp.text().await
    );
    let started: Value = c
        .post(format!("{url}/api/v1/vms/desk-01/start"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["state"], "running", "{started}");
    let pid = started["pid"].as_u64().unwrap();
    assert_eq!(started["vmm"]["vcpus"], 1, "{started}");
    // The VMM was told the disk's recorded format and the console log's bound.
    let vm_toml = std::fs::read_to_string(r.cfg.state_dir.join("vms/desk-01/vm.toml")).unwrap();
    assert!(vm_toml.contains("format = \"qcow2\""), "{vm_toml}");
    assert!(vm_toml.contains("serial_log_max = \"16M\""), "{vm_toml}");
    assert!(vm_toml.contains("on_reboot = \"restart\""), "{vm_toml}");
    // The disk of a running VM cannot be deleted.
    let resp = c
        .delete(format!("{url}/api/v1/datastores/ds1/disks/desk-01.qcow2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    // Nor the base under a clone.
    let resp = c
        .delete(format!("{url}/api/v1/datastores/ds1/disks/gold.qcow2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);

    // The agent goes away and comes back: the VM kept running and is found again.
    task.abort();
    let _ = task.await;
    let (url, _task2) = start(&r.cfg).await;
    let again: Value = c
        .get(format!("{url}/api/v1/vms/desk-01"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["state"], "running", "{again}");
    assert_eq!(again["pid"].as_u64(), Some(pid));
    let list: Value = c
        .get(format!("{url}/api/v1/vms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let stopped: Value = c
        .post(format!("{url}/api/v1/vms/desk-01/stop"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
    );
    // Started again after a stop: a new VMM on the same definition.
    let again: Value = c
        .post(format!("{url}/api/v1/vms/desk-01/start"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["state"], "running", "{again}");
    let stopped: Value = c
        .post(format!("{url}/api/v1/vms/desk-01/stop"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let resp = c
        .delete(format!("{url}/api/v1/vms/desk-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = c
        .delete(format!("{url}/api/v1/datastores/ds1/disks/desk-01.qcow2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let disks: Value = c
        .get(format!("{url}/api/v1/datastores/ds1/disks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(disks.as_array().unwrap().len(), 1, "{disks}");
}

#[test]
fn configuration_is_checked() {
    let dir = std::env::temp_dir().join(format!("tessera-agent-cfg-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("ds")).unwrap();
    let write = |text: &str| {
        let p = dir.join("agent.toml");
        std::fs::write(&p, text).unwrap();
        AgentConfig::load(&p)
    };
    let ds = format!(
        "[[datastore]]\nname = \"ds1\"\npath = \"{}\"\n",
        dir.join("ds").display()
    );
    // Without TLS, not even loopback TCP: any local user could drive it.
    for listen in ["127.0.0.1:8443", "[::1]:8443", "0.0.0.0:8443"] {
        let e = write(&format!(
            "state_dir = \"/tmp/x\"\nlisten = \"{listen}\"\n{ds}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs [tls]"), "{listen}: {e}");
    }
    assert!(write(&format!(
        "state_dir = \"/tmp/x\"\nlisten = \"unix:/run/tessera-agent/agent.sock\"\n{ds}"
    ))
    .is_ok());
    let e = write(&format!(
        "state_dir = \"/tmp/x\"\nlisten = \"unix:agent.sock\"\n{ds}"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("absolute"), "{e}");
    let e = write(&format!("state_dir = \"/tmp/x\"\n{ds}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs [tls]"), "{e}");
    let e = write("state_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("datastore"), "{e}");
    let e = write(&format!(
        "state_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:1\"\n{ds}{ds}"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("two datastores"), "{e}");
    let e = write("state_dir = 3\n").unwrap_err().to_string();
    assert!(e.contains("agent.toml"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Defines and starts `name` on `kernel` (a tiny guest in the library); waits for the guest
/// to print `line` on its console when given.
async fn run_tiny(r: &Rig, url: &str, name: &str, kernel: &str, line: Option<&str>) {
    let spec = json!({"name": name, "vcpus": 1, "memory_mib": 64, "kernel": kernel, "disks": []});
    let resp = r
        .client
        .put(format!("{url}/api/v1/vms/{name}"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let started: Value = r
        .client
        .post(format!("{url}/api/v1/vms/{name}/start"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["state"], "running", "{started}");
    if let Some(line) = line {
        let console = r.cfg.state_dir.join(format!("vms/{name}/console.log"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&console).is_ok_and(|c| c.contains(line)) {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never printed {line}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Stops `name` with `body` (None: no body); returns the answer and how long it took.
async fn stop(r: &Rig, url: &str, name: &str, body: Option<Value>) -> (Value, Duration) {
    let t = std::time::Instant::now();
    let mut req = r.client.post(format!("{url}/api/v1/vms/{name}/stop"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    (resp.json().await.unwrap(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_asks_the_guest_first_and_powers_off_whoever_does_not_answer() {
    if !kvm() {
        return;
    }
    let r = rig("stop");
    let lib = r.dir.join("library");
    let tg = tessera_vmm::tiny_guest::acpi_power_button;
    std::fs::write(lib.join("obey.elf"), tg(true)).unwrap();
    std::fs::write(lib.join("ignore.elf"), tg(false)).unwrap();
    std::fs::write(
        lib.join("idle.elf"),
        tessera_vmm::tiny_guest::milestones_then_idle(&[]),
    )
    .unwrap();
    let (url, _task) = start(&r.cfg).await;

    // A guest that listens for the ACPI power button and shuts down.
    run_tiny(&r, &url, "obey", "obey.elf", Some("button armed")).await;
    let (s, _) = stop(&r, &url, "obey", None).await;
    assert_eq!(s["outcome"], "guest_shut_down", "{s}");
    assert_eq!(s["state"], "stopped", "{s}");
    let console = std::fs::read_to_string(r.cfg.state_dir.join("vms/obey/console.log")).unwrap();
    assert!(console.contains("button pressed"), "{console}");

    // One that listens but does nothing: powered off once the request's timeout passes.
    run_tiny(&r, &url, "ignore", "ignore.elf", Some("button armed")).await;
    let (s, took) = stop(&r, &url, "ignore", Some(json!({"timeout_secs": 1}))).await;
    assert_eq!(s["outcome"], "guest_timed_out", "{s}");
    assert_eq!(s["state"], "stopped", "{s}");
    assert!(took >= Duration::from_secs(1), "{took:?}");

    // A start asked for while the guest is being shut down waits for the stop, then boots
    // the VM again (it does not answer "running" for a VM about to go).
    run_tiny(&r, &url, "ignore", "ignore.elf", Some("button armed")).await;
    let first = std::fs::read_to_string(r.cfg.state_dir.join("vms/ignore/pid")).unwrap();
    let stopping = stop(&r, &url, "ignore", Some(json!({"timeout_secs": 2})));
    let starting = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = std::time::Instant::now();
        let v: Value = r
            .client
            .post(format!("{url}/api/v1/vms/ignore/start"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v, t.elapsed())
    };
    let ((s, _), (started, waited)) = tokio::join!(stopping, starting);
    assert_eq!(s["outcome"], "guest_timed_out", "{s}");
    assert_eq!(started["state"], "running", "{started}");
    assert!(
        waited >= Duration::from_secs(1),
        "the start did not wait: {waited:?}"
    );
    let second = std::fs::read_to_string(r.cfg.state_dir.join("vms/ignore/pid")).unwrap();
    assert_ne!(first, second, "the same VMM");
    let (s, _) = stop(&r, &url, "ignore", Some(json!({"force": true}))).await;
    assert_eq!(s["outcome"], "forced", "{s}");

    // One that never enabled the button: powered off at once, without waiting.
    run_tiny(&r, &url, "idle", "idle.elf", None).await;
    let (s, took) = stop(&r, &url, "idle", None).await;
    assert_eq!(s["outcome"], "guest_not_listening", "{s}");
    assert_eq!(s["state"], "stopped", "{s}");
    assert!(took < Duration::from_secs(30), "{took:?}");

    // Forced, and a stop of a stopped VM; a malformed request is refused.
    run_tiny(&r, &url, "obey", "obey.elf", Some("button armed")).await;
    let (s, _) = stop(&r, &url, "obey", Some(json!({"force": true}))).await;
    assert_eq!(s["outcome"], "forced", "{s}");
    let (s, _) = stop(&r, &url, "obey", None).await;
    assert_eq!(s["outcome"], "not_running", "{s}");
    let resp = r
        .client
        .post(format!("{url}/api/v1/vms/obey/stop"))
        .json(&json!({"forse": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
