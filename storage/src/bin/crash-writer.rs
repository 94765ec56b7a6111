//! Test helper for the crash-consistency test: writes 4 KiB blocks with a recognisable pattern
//! (block n is filled with n's low byte, and starts with n as 8 bytes) to scattered offsets,
//! flushes every `batch` writes and then prints `ACK <n>`: every block before n is durable.
//! The test kills it with SIGKILL at random moments.
//! Usage: crash-writer IMAGE START BATCH
use std::io::Write;

/// Offset of block `n`: scattered over the disk so every batch allocates new clusters.
fn offset(n: u64, size: u64) -> u64 {
    (n * 4096 * 7919) % (size - 4096) / 4096 * 4096
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [img, start, batch] = a.as_slice() else {
        anyhow::bail!("usage: IMAGE START BATCH")
    };
    let path = std::path::Path::new(img);
    let ds = tessera_storage::Datastore::new(path.parent().unwrap_or(std::path::Path::new(".")))?;
    let disk = tessera_storage::Disk::open(&ds, path, tessera_storage::Format::Qcow2, true)?;
    let (mut n, batch): (u64, u64) = (start.parse()?, batch.parse()?);
    let mut out = std::io::stdout();
    loop {
        for _ in 0..batch {
            let mut block = vec![n as u8; 4096];
            block[..8].copy_from_slice(&n.to_le_bytes());
            disk.write(&block, offset(n, disk.size()))?;
            n += 1;
        }
        disk.flush()?;
        writeln!(out, "ACK {n}")?;
        out.flush()?;
    }
}
