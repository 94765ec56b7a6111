//! `tessera-img check` against `qemu-img check` on the same images: clean ones written by us
//! and by QEMU (compressed, internal snapshots, 1- and 64-bit refcounts, v2, extended L2), and
//! images damaged on purpose (a leaked cluster, a lost refcount, a misaligned L2 entry). Both
//! tools must reach the same counts and the same exit status.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use tessera_storage::header;
use tessera_storage::ops;
use tessera_storage::{Disk, Format};

mod common;
use common::*;

const TESSERA_IMG: &str = env!("CARGO_BIN_EXE_tessera-img");

/// The fields both tools report, missing ones as 0, and the exit status.
fn verdict(cmd: &str, file: &Path) -> (Vec<(String, u64)>, i32) {
    let out = Command::new(cmd)
        .args(["check", "--output", "json"])
        .arg(file)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{cmd}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let fields = [
        "check-errors",
        "leaks",
        "corruptions",
        "allocated-clusters",
        "total-clusters",
        "fragmented-clusters",
        "compressed-clusters",
        "image-end-offset",
    ]
    .iter()
    .map(|k| {
        (
            k.to_string(),
            json.get(*k).and_then(|v| v.as_u64()).unwrap_or(0),
        )
    })
    .collect();
    (fields, out.status.code().unwrap_or(-1))
}

fn agree(file: &Path) -> (Vec<(String, u64)>, i32) {
    let ours = verdict(TESSERA_IMG, file);
    let theirs = verdict("qemu-img", file);
    assert_eq!(
        ours,
        theirs,
        "{} (tessera-img, then qemu-img)",
        file.display()
    );
    ours
}

fn field(v: &[(String, u64)], k: &str) -> u64 {
    v.iter().find(|(n, _)| n == k).map_or(0, |(_, x)| *x)
}

fn qemu_io(file: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for x in cmds {
        c.args(["-c", x]);
    }
    run(c.arg(file));
}

#[test]
fn clean_images_agree() {
    if !have_qemu_img() {
        return;
    }
    let d = Dir::new("check-clean");
    let ds = d.ds();
    for cs in [512usize, 65536, 2 << 20] {
        let p = d.p(&format!("ours-{cs}.qcow2"));
        ops::create(&ds, &p, 64 << 20, Format::Qcow2, cs).unwrap();
        {
            let disk = Disk::open(&ds, &p, tessera_storage::Format::Qcow2, true).unwrap();
            for i in 0..40u64 {
                let off = (i * 7_919 * 4096) % (60 << 20);
                disk.write(&[i as u8; 8192], off).unwrap();
            }
            let mut disk = disk;
            disk.discard(1 << 20, 4 << 20).unwrap();
            disk.flush().unwrap();
        }
        let (v, rc) = agree(&p);
        assert_eq!(rc, 0);
        assert!(field(&v, "allocated-clusters") > 0);
    }

    let src = d.p("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", src.to_str().unwrap(), "32M"]);
    qemu_io(
        &src,
        &[
            "write -P 0x11 0 3M",
            "write -P 0x22 7M 1M",
            "write -z 9M 1M",
        ],
    );
    let compressed = d.p("compressed.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        src.to_str().unwrap(),
        compressed.to_str().unwrap(),
    ]);
    let (v, _) = agree(&compressed);
    assert!(field(&v, "compressed-clusters") > 0);

    let snap = d.p("snap.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", snap.to_str().unwrap(), "32M"]);
    qemu_io(&snap, &["write -P 1 0 2M"]);
    qemu_img(&["snapshot", "-c", "s1", snap.to_str().unwrap()]);
    qemu_io(&snap, &["write -P 2 1M 2M"]);
    qemu_img(&["snapshot", "-c", "s2", snap.to_str().unwrap()]);
    qemu_io(&snap, &["write -P 3 0 512k"]);
    agree(&snap);

    for opts in [
        "refcount_bits=1",
        "refcount_bits=2",
        "refcount_bits=64",
        "compat=0.10",
        "extended_l2=on,cluster_size=128k",
    ] {
        let p = d.p(&format!("opt-{}.qcow2", opts.replace([',', '='], "-")));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            p.to_str().unwrap(),
            "16M",
        ]);
        qemu_io(
            &p,
            &["write -P 5 0 1M", "write -P 6 5M 100k", "discard 0 256k"],
        );
        let (_, rc) = agree(&p);
        assert_eq!(rc, 0, "{opts}");
    }
}

/// The L2 table and first data cluster of a small image written by qemu-io.
fn damaged_copy(d: &Dir, name: &str) -> (std::path::PathBuf, std::fs::File, u64, u64) {
    let p = d.p(name);
    qemu_img(&["create", "-q", "-f", "qcow2", p.to_str().unwrap(), "16M"]);
    qemu_io(&p, &["write -P 7 0 256k"]);
    let h = header::read(&p).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, h.l1_table_offset).unwrap();
    let l2 = u64::from_be_bytes(e) & 0x00ff_ffff_ffff_fe00;
    (p, f, l2, h.refcount_table_offset)
}

#[test]
fn damaged_images_agree() {
    if !have_qemu_img() {
        return;
    }
    let d = Dir::new("check-damaged");

    // A leak: the first data cluster is dropped from the L2 table, its refcount stays.
    let (p, f, l2, _) = damaged_copy(&d, "leak.qcow2");
    f.write_all_at(&[0u8; 8], l2).unwrap();
    drop(f);
    let (v, rc) = agree(&p);
    assert_eq!((field(&v, "leaks"), rc), (1, 3));

    // A corruption: the L2 table's refcount is set to 0 while the L1 table points to it.
    let (p, f, l2, rt) = damaged_copy(&d, "lost-refcount.qcow2");
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, rt).unwrap();
    let block = u64::from_be_bytes(e);
    let cluster = l2 / 65536;
    f.write_all_at(&[0, 0], block + cluster * 2).unwrap();
    drop(f);
    let (v, rc) = agree(&p);
    assert!(field(&v, "corruptions") >= 1);
    assert_eq!(rc, 2);

    // A data pointer that is not cluster aligned.
    let (p, f, l2, _) = damaged_copy(&d, "misaligned.qcow2");
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, l2 + 8).unwrap();
    let bent = u64::from_be_bytes(e) + 512;
    f.write_all_at(&bent.to_be_bytes(), l2 + 8).unwrap();
    drop(f);
    let ours = verdict(TESSERA_IMG, &p);
    let theirs = verdict("qemu-img", &p);
    assert_eq!(ours.1, theirs.1, "exit status");
    assert!(field(&ours.0, "corruptions") >= 1);
}

#[test]
fn raw_and_hostile_inputs_give_clear_errors() {
    let d = Dir::new("check-hostile");
    let raw = d.p("disk.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let out = Command::new(TESSERA_IMG)
        .arg("check")
        .arg(&raw)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not support checks"));

    // A header whose tables point far beyond the file.
    let p = d.p("hostile.qcow2");
    let ds = d.ds();
    ops::create(&ds, &p, 1 << 20, Format::Qcow2, 65536).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&(1u64 << 50).to_be_bytes(), 40).unwrap(); // L1 table offset
    f.write_all_at(&(1u64 << 45).to_be_bytes(), 48).unwrap(); // refcount table offset
    f.write_all_at(&u32::MAX.to_be_bytes(), 56).unwrap(); // refcount table clusters
    drop(f);
    let out = Command::new(TESSERA_IMG)
        .arg("check")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
