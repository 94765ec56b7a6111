//! guest-io-bench: the disk benchmark the test guest runs on its virtio disk, so that the same
//! measurement compares tessera-vmm and QEMU (BENCHMARKS.md, storage (c)).
//!
//!   guest-io-bench DEVICE SECONDS SPAN_MIB
//!
//! Four phases on the first SPAN_MIB MiB of DEVICE, with O_DIRECT (no guest page cache) and one
//! request in flight, so each result is the round trip through the guest's driver, the VMM's
//! virtio-blk and its image layer: 4 KiB random reads and random writes for SECONDS each (IOPS),
//! then 1 MiB sequential reads and writes over the span (MiB/s). Writes end with fsync, which
//! becomes a virtio FLUSH. Prints one line per phase:
//!   tg: io randread-4k iops=N
//! (fio does this better; it is not in the guest, and a static Rust binary needs no libraries.)

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const ALIGN: usize = 4096;

/// A zeroed buffer of `len` bytes at a 4 KiB-aligned address, as O_DIRECT needs; carved out of
/// a larger Vec so no unsafe allocation is needed.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Self {
        let storage = vec![fill; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        Self {
            storage,
            start,
            len,
        }
    }
    fn buf(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_4k(f: &File, write: bool, span: u64, secs: u64) -> std::io::Result<f64> {
    let mut b = Aligned::new(4096, 0x5a);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let blocks = span / 4096;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut ops = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let off = (rng.next() % blocks) * 4096;
            if write {
                f.write_all_at(b.buf(), off)?;
            } else {
                f.read_exact_at(b.buf(), off)?;
            }
            ops += 1;
        }
    }
    if write {
        f.sync_all()?;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

fn sequential_1m(f: &File, write: bool, span: u64) -> std::io::Result<f64> {
    let mut b = Aligned::new(1 << 20, 0xa5);
    let start = Instant::now();
    let mut off = 0;
    while off < span {
        if write {
            f.write_all_at(b.buf(), off)?;
        } else {
            f.read_exact_at(b.buf(), off)?;
        }
        off += 1 << 20;
    }
    if write {
        f.sync_all()?;
    }
    Ok(span as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

fn run(dev: &str, secs: u64, span: u64) -> std::io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)?;
    println!(
        "tg: io randread-4k iops={:.0}",
        random_4k(&f, false, span, secs)?
    );
    println!(
        "tg: io randwrite-4k iops={:.0}",
        random_4k(&f, true, span, secs)?
    );
    println!(
        "tg: io seqread-1m mibps={:.1}",
        sequential_1m(&f, false, span)?
    );
    println!(
        "tg: io seqwrite-1m mibps={:.1}",
        sequential_1m(&f, true, span)?
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let dev = args.get(1)?.clone();
        let secs = args.get(2)?.parse::<u64>().ok()?;
        let span = args.get(3)?.parse::<u64>().ok()?.checked_mul(1 << 20)?;
        Some((dev, secs, span))
    })();
    let Some((dev, secs, span)) = parsed.filter(|p| p.2 >= 1 << 20) else {
        eprintln!("usage: guest-io-bench DEVICE SECONDS SPAN_MIB");
        return ExitCode::from(2);
    };
    match run(&dev, secs, span) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("tg: io error: {e}");
            ExitCode::FAILURE
        }
    }
}
