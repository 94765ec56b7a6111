//! virtio-blk end to end: the Debian test guest, inside the nested harness, on a qcow2 linked
//! clone made by tessera-storage over a base written by qemu-io. The guest checks the base's
//! data through the clone, writes a pattern, discards a range and flushes; then qemu-img and
//! qemu-io check both images on the host.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use tessera_storage::ops::{self, Durability};
use tessera_storage::Datastore;

fn sh(cmd: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

/// qemu-io reads `pattern` at each (offset, length) and must find it.
fn expect_pattern(dir: &Path, image: &str, checks: &[(&str, &str, &str)]) {
    let mut args = vec!["-r"];
    let cmds: Vec<String> = checks
        .iter()
        .map(|(p, off, len)| format!("read -P {p} {off} {len}"))
        .collect();
    for c in &cmds {
        args.extend(["-c", c.as_str()]);
    }
    args.push(image);
    let out = sh("qemu-io", &args, dir);
    assert!(
        !out.contains("Pattern verification failed") && !out.contains("failed"),
        "{image}: {out}"
    );
}

#[test]
fn guest_writes_through_virtio_blk_and_qemu_reads_it_back() {
    if !nested_or_skip("guest_writes_through_virtio_blk_and_qemu_reads_it_back") {
        return;
    }
    let scratch = Scratch::new("virtio-blk-nested");
    let ds_dir = scratch.0.join("ds");
    std::fs::create_dir_all(&ds_dir).unwrap();
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "base.qcow2", "64M"],
        &ds_dir,
    );
    sh(
        "qemu-io",
        &[
            "-c",
            "write -P 0x3c 2M 1M",
            "-c",
            "write -P 0x77 8M 1M",
            "base.qcow2",
        ],
        &ds_dir,
    );
    let ds = Datastore::new(&ds_dir).unwrap();
    ops::linked_clone(
        &ds,
        &ds_dir.join("base.qcow2"),
        &ds_dir.join("clone.qcow2"),
        Durability::Sync,
    )
    .unwrap();

    // The transfer disk: a tar of the datastore with room for the clone to grow.
    let xfer = scratch.0.join("xfer.raw");
    sh(
        "tar",
        &["-cf", xfer.to_str().unwrap(), "base.qcow2", "clone.qcow2"],
        &ds_dir,
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&xfer)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let out = Command::new(repo().join("tests/nested/run.sh"))
        .arg("disk")
        .env("NEST_DISK", &xfer)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nested disk scenario failed:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "tg: pci 0000:00:01.0 0x1af4:0x1042 class=0x010000",
        "tg: vda sectors=131072 serial=tessera-disk-0 queues=2 ro=0",
        "tg: vda read-check ok",
        "tg: vda wrote 0xa5 at 4M",
        "tg: vda discarded 8M+1M",
        "tg: vda discard-check ok",
        "TESSERA-GUEST-READY",
        "NEST: datastore written back",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }

    let back = scratch.0.join("back");
    std::fs::create_dir_all(&back).unwrap();
    sh("tar", &["-xf", xfer.to_str().unwrap()], &back);
    for image in ["clone.qcow2", "base.qcow2"] {
        let check = sh("qemu-img", &["check", image], &back);
        assert!(check.contains("No errors were found"), "{image}: {check}");
        assert!(!check.contains("leaked"), "{image}: {check}");
    }
    expect_pattern(
        &back,
        "clone.qcow2",
        &[
            ("0x3c", "2M", "1M"),
            ("0xa5", "4M", "1M"),
            ("0", "8M", "1M"),
        ],
    );
    // The base is untouched: the guest's writes and discards live in the clone only.
    expect_pattern(
        &back,
        "base.qcow2",
        &[("0", "4M", "1M"), ("0x77", "8M", "1M")],
    );
}
