//! Compatibility with the real tools: images tessera-storage writes pass `qemu-img check` and
//! compare equal to the same writes made by `qemu-io`; images and chains that `qemu-img`
//! created read back correctly; hostile chains are refused.

use std::path::Path;
use std::process::Command;

use tessera_storage::ops::{self, Durability};
use tessera_storage::{Disk, Format, StorageError};

mod common;
use common::*;

fn qemu_io(file: &Path, fmt: &str, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", fmt]);
    for x in cmds {
        c.args(["-c", x]);
    }
    run(c.arg(file));
}

fn check_clean(file: &Path) {
    let out = qemu_img(&["check", file.to_str().unwrap()]);
    assert!(
        out.contains("No errors were found"),
        "{}: {out}",
        file.display()
    );
    assert!(!out.contains("leaked"), "{}: {out}", file.display());
}

fn compare(a: &Path, b: &Path) {
    let out = Command::new("qemu-img")
        .args(["compare", a.to_str().unwrap(), b.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} vs {}: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A deterministic set of writes: (offset, length, fill byte), including unaligned ones and
/// ones that straddle clusters.
fn writes() -> Vec<(u64, u64, u8)> {
    vec![
        (0, 4096, 0x11),
        (65_536 - 512, 1024, 0x22),
        (1 << 20, 300_000, 0x33),
        (5 << 20, 512, 0x44),
        (8 << 20 | 4096, 65_536, 0x55),
    ]
}

fn apply_ours(disk: &Disk) {
    for (off, len, fill) in writes() {
        disk.write(&vec![fill; len as usize], off).unwrap();
    }
    disk.flush().unwrap();
}

fn apply_qemu(file: &Path, fmt: &str) {
    let cmds: Vec<String> = writes()
        .iter()
        .map(|(o, l, f)| format!("write -P {f:#x} {o} {l}"))
        .collect();
    qemu_io(file, fmt, &cmds);
}

#[test]
fn our_writes_equal_qemu_io_writes_and_pass_check() {
    if !have_qemu_img() {
        return;
    }
    let d = Dir::new("writes");
    let ds = d.ds();
    for cluster in [512usize, 4096, 65536, 2 << 20] {
        let ours = d.p(&format!("ours-{cluster}.qcow2"));
        ops::create(&ds, &ours, 16 << 20, Format::Qcow2, cluster).unwrap();
        apply_ours(&Disk::open(&ds, &ours, tessera_storage::Format::Qcow2, true).unwrap());
        let theirs = d.p(&format!("theirs-{cluster}.qcow2"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cluster}"),
            theirs.to_str().unwrap(),
            "16M",
        ]);
        apply_qemu(&theirs, "qcow2");
        check_clean(&ours);
        compare(&ours, &theirs);
    }
}

#[test]
fn reads_chains_qemu_img_made_v2_and_v3_and_compressed() {
    if !have_qemu_img() {
        return;
    }
    let d = Dir::new("reads");
    let base = d.p("base.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        base.to_str().unwrap(),
        "16M",
    ]);
    qemu_io(
        &base,
        "qcow2",
        &["write -P 0x61 0 2M".into(), "write -z 4M 1M".into()],
    );
    let mid = d.p("mid.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        mid.to_str().unwrap(),
    ]);
    qemu_io(
        &mid,
        "qcow2",
        &["write -P 0x62 1M 2M".into(), "write -z 0 4096".into()],
    );
    let top = d.p("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    qemu_io(&top, "qcow2", &["write -P 0x63 10M 100k".into()]);
    let comp = d.p("comp.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        top.to_str().unwrap(),
        comp.to_str().unwrap(),
    ]);
    let raw = d.p("expect.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        top.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let expect = std::fs::read(&raw).unwrap();
    let ds = d.ds();
    for img in [&top, &comp] {
        let disk = Disk::open(&ds, img, tessera_storage::Format::Qcow2, false).unwrap();
        let mut got = vec![0u8; expect.len()];
        disk.read(&mut got, 0).unwrap();
        assert!(
            got == expect,
            "{} reads differently from qemu-img convert",
            img.display()
        );
    }
    assert_eq!(
        Disk::open(&ds, &top, tessera_storage::Format::Qcow2, false)
            .unwrap()
            .chain()
            .len(),
        3
    );
}

#[test]
fn linked_clones_snapshots_revert_commit_flatten_agree_with_qemu() {
    if !have_qemu_img() {
        return;
    }
    let d = Dir::new("ops");
    let ds = d.ds();
    let base = d.p("golden.qcow2");
    ops::create(&ds, &base, 32 << 20, Format::Qcow2, 65536).unwrap();
    qemu_io(&base, "qcow2", &["write -P 0xa0 0 4M".into()]);

    // Linked clone, written through the library; a twin made by qemu-img, written by qemu-io.
    let desk = ops::linked_clone(
        &ds,
        &base,
        tessera_storage::Format::Qcow2,
        &d.p("desk.qcow2"),
        Durability::Sync,
    )
    .unwrap();
    apply_ours(&Disk::open(&ds, &desk, tessera_storage::Format::Qcow2, true).unwrap());
    let twin = d.p("twin.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "golden.qcow2",
        "-F",
        "qcow2",
        twin.to_str().unwrap(),
    ]);
    apply_qemu(&twin, "qcow2");
    check_clean(&desk);
    compare(&desk, &twin);
    let info = qemu_img(&["info", desk.to_str().unwrap()]);
    assert!(info.contains("backing file: golden.qcow2"), "{info}");

    // Snapshot: the snapshot keeps the content; new writes go to the new overlay.
    let snap = ops::snapshot(&ds, &desk, Format::Qcow2, &d.p("desk.s1")).unwrap();
    compare(&snap, &twin);
    qemu_io(&desk, "qcow2", &["write -P 0xee 20M 64k".into()]);
    qemu_io(&twin, "qcow2", &["write -P 0xee 20M 64k".into()]);
    compare(&desk, &twin);
    check_clean(&desk);
    check_clean(&snap);

    // Delete the snapshot: the golden image is shared (twin uses it), so committing into it
    // must be refused.
    assert!(matches!(
        ops::commit(&ds, &snap),
        Err(StorageError::SharedBase { .. })
    ));

    // Flatten gives a standalone copy with the same content.
    let full = ops::flatten(&ds, &desk, Format::Qcow2, &d.p("full.qcow2")).unwrap();
    compare(&full, &desk);
    check_clean(&full);
    assert!(!qemu_img(&["info", full.to_str().unwrap()]).contains("backing file"));

    // With the twin gone, the snapshot can be merged into golden; desk then reads the same.
    std::fs::remove_file(&twin).unwrap();
    let merged = ops::commit(&ds, &snap).unwrap();
    assert_eq!(merged, base.canonicalize().unwrap());
    assert!(!snap.exists());
    compare(&desk, &full);
    check_clean(&desk);
    check_clean(&base);
    assert!(qemu_img(&["info", desk.to_str().unwrap()]).contains("backing file: golden.qcow2"));

    // Revert (refresh on logoff): desk reads exactly like golden again.
    ops::revert(&ds, &desk).unwrap();
    compare(&desk, &base);
    check_clean(&desk);
}

#[test]
fn discard_frees_and_zeroes() {
    if !have_qemu_img() {
        return;
    }
    let d = Dir::new("discard");
    let ds = d.ds();
    let img = d.p("d.qcow2");
    ops::create(&ds, &img, 8 << 20, Format::Qcow2, 65536).unwrap();
    {
        let mut disk = Disk::open(&ds, &img, tessera_storage::Format::Qcow2, true).unwrap();
        disk.write(&vec![7u8; 2 << 20], 0).unwrap();
        disk.discard(0, 1 << 20).unwrap();
        disk.flush().unwrap();
        let mut b = vec![1u8; 4096];
        disk.read(&mut b, 4096).unwrap();
        assert!(b.iter().all(|x| *x == 0));
    }
    check_clean(&img);
    let map = qemu_img(&["map", "--output=json", img.to_str().unwrap()]);
    assert!(map.contains("\"zero\": true"), "{map}");
}

#[test]
fn hostile_chains_are_refused() {
    let d = Dir::new("hostile");
    let ds = d.ds();
    if !have_qemu_img() {
        return;
    }
    let outside = d.p("outside.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        outside.to_str().unwrap(),
        "1M",
    ]);
    assert!(matches!(
        Disk::open(&ds, &outside, tessera_storage::Format::Qcow2, false),
        Err(StorageError::OutsideDatastore { .. })
    ));

    let dotdot = d.p("dotdot.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "../../../../etc/passwd",
        "-F",
        "raw",
        "-u",
        dotdot.to_str().unwrap(),
        "1M",
    ]);
    assert!(matches!(
        Disk::open(&ds, &dotdot, tessera_storage::Format::Qcow2, false),
        Err(StorageError::OutsideDatastore { .. })
    ));

    std::os::unix::fs::symlink("/etc/passwd", d.p("link.raw")).unwrap();
    let via_link = d.p("via-link.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "link.raw",
        "-F",
        "raw",
        "-u",
        via_link.to_str().unwrap(),
        "1M",
    ]);
    assert!(matches!(
        Disk::open(&ds, &via_link, tessera_storage::Format::Qcow2, false),
        Err(StorageError::OutsideDatastore { .. })
    ));

    let a = d.p("loop-a.qcow2");
    let b = d.p("loop-b.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "loop-b.qcow2",
        "-F",
        "qcow2",
        "-u",
        a.to_str().unwrap(),
        "1M",
    ]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "loop-a.qcow2",
        "-F",
        "qcow2",
        "-u",
        b.to_str().unwrap(),
        "1M",
    ]);
    assert!(matches!(
        Disk::open(&ds, &a, tessera_storage::Format::Qcow2, false),
        Err(StorageError::ChainLoop(_))
    ));

    let mut prev = d.p("deep-0.qcow2");
    ops::create(&ds, &prev, 1 << 20, Format::Qcow2, 65536).unwrap();
    for i in 1..=70 {
        prev = ops::linked_clone(
            &ds,
            &prev,
            tessera_storage::Format::Qcow2,
            &d.p(&format!("deep-{i}.qcow2")),
            Durability::Deferred,
        )
        .unwrap_or(prev);
    }
    assert!(matches!(
        Disk::open(&ds, &prev, tessera_storage::Format::Qcow2, false),
        Err(StorageError::ChainTooDeep(_))
    ));
}

#[test]
fn corrupt_headers_give_errors_not_panics() {
    let d = Dir::new("corrupt");
    let ds = d.ds();
    let good = d.p("good.qcow2");
    ops::create(&ds, &good, 4 << 20, Format::Qcow2, 65536).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    // Flip every byte of the header region, one at a time, to a few hostile values.
    let mut seen_errors = 0;
    for off in 4..112 {
        for v in [0x00u8, 0xff, 0x80] {
            let mut b = bytes.clone();
            b[off] = v;
            let p = d.p("bad.qcow2");
            std::fs::write(&p, &b).unwrap();
            match Disk::open(&ds, &p, tessera_storage::Format::Qcow2, false) {
                Ok(disk) => {
                    let mut buf = vec![0u8; 65536];
                    let _ = disk.read(&mut buf, 0);
                }
                Err(_) => seen_errors += 1,
            }
        }
    }
    assert!(
        seen_errors > 50,
        "only {seen_errors} corruptions were detected"
    );
}
