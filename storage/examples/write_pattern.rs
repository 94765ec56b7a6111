//! Writes `count` blocks at a fixed stride into an image, for profiling by hand:
//! `cargo run --release -p tessera-storage --example write_pattern -- IMAGE COUNT STEP BLOCKSIZE`
fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [img, count, step, bs] = a.as_slice() else {
        anyhow::bail!("usage: IMAGE COUNT STEP BLOCKSIZE")
    };
    let path = std::path::Path::new(img);
    let ds = tessera_storage::Datastore::new(path.parent().unwrap_or(std::path::Path::new(".")))?;
    let disk = tessera_storage::Disk::open(&ds, path, tessera_storage::Format::Qcow2, true)?;
    let (count, step): (u64, u64) = (count.parse()?, step.parse()?);
    let bs: usize = bs.parse()?;
    let span = disk.size() - bs as u64;
    let buf = vec![0x5au8; bs];
    let mut off = 0;
    let t = std::time::Instant::now();
    for _ in 0..count {
        disk.write(&buf, off)?;
        off = (off + step) % span;
    }
    disk.flush()?;
    eprintln!("{count} writes in {:.3} s", t.elapsed().as_secs_f64());
    Ok(())
}
