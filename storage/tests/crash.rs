//! Crash consistency: a writer is killed with SIGKILL at random moments, many times; after each
//! kill the image passes `qemu-img check` (leaked clusters allowed, never errors), and every
//! block the writer acknowledged after a flush reads back intact.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tessera_storage::ops::{self, Durability};
use tessera_storage::{Datastore, Disk, Format};

fn writer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_crash-writer"))
}

fn offset(n: u64, size: u64) -> u64 {
    (n * 4096 * 7919) % (size - 4096) / 4096 * 4096
}

/// A small xorshift generator: kill delays vary, yet a failure can be replayed from the seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn sigkill_mid_write_loses_no_acknowledged_write() {
    let have = Command::new("qemu-img").arg("--version").output().is_ok();
    if !have {
        if std::env::var("TESSERA_REQUIRE_QEMU_IMG").as_deref() == Ok("1") {
            panic!("qemu-img required");
        }
        eprintln!("\n*** SKIP sigkill test: qemu-img not installed; did NOT run ***\n");
        return;
    }
    let bin = writer_bin();
    let dir = std::env::temp_dir().join(format!("tessera-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ds = Datastore::new(&dir).unwrap();
    let base = dir.join("base.qcow2");
    ops::create(&ds, &base, 256 << 20, Format::Qcow2, 65536).unwrap();
    let img = ops::linked_clone(
        &ds,
        &base,
        tessera_storage::Format::Qcow2,
        &dir.join("desk.qcow2"),
        Durability::Sync,
    )
    .unwrap();

    let mut acked = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let rounds = 60;
    for round in 0..rounds {
        let mut child = Command::new(&bin)
            .args([img.to_str().unwrap(), &acked.to_string(), "16"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait for at least one acknowledgement, then kill after a random delay.
        let first = lines
            .next()
            .expect("writer died before its first ACK")
            .unwrap();
        assert!(first.starts_with("ACK "), "{first}");
        std::thread::sleep(Duration::from_micros(next(&mut seed) % 20_000));
        child.kill().unwrap();
        let mut last = first;
        for l in lines.map_while(Result::ok) {
            last = l;
        }
        child.wait().unwrap();
        acked = last.trim_start_matches("ACK ").parse().unwrap();

        let out = Command::new("qemu-img")
            .args(["check", img.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // Exit 0: clean; 3: only leaked clusters (harmless, reclaimable). 1/2: errors.
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "round {round}: qemu-img check found errors after SIGKILL:\n{text}"
        );
        // Our own check must reach the same verdict.
        let ours = Command::new(env!("CARGO_BIN_EXE_tessera-img"))
            .args(["check", img.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            ours.status.code(),
            out.status.code(),
            "round {round}: tessera-img check disagrees with qemu-img:\n{}\n{text}",
            String::from_utf8_lossy(&ours.stdout)
        );

        let disk = Disk::open(&ds, &img, tessera_storage::Format::Qcow2, false).unwrap();
        let size = disk.size();
        let mut block = vec![0u8; 4096];
        for n in acked.saturating_sub(200)..acked {
            disk.read(&mut block, offset(n, size)).unwrap();
            // A later block may share the offset after the pattern wraps; it then carries its own
            // (larger) number, which is fine: it was written after n.
            let got = u64::from_le_bytes(block[..8].try_into().unwrap());
            assert!(got >= n, "round {round}: block {n} lost (reads {got})");
            assert!(
                block[8..].iter().all(|b| *b == got as u8),
                "round {round}: block {n} torn"
            );
        }
    }
    assert!(acked > 0);
    let _ = std::fs::remove_dir_all(&dir);
}
