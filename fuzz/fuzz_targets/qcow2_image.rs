//! Fuzzes what a hostile image file reaches: the header reader, the metadata audit of
//! `tessera-img check`, the chain walk and imago's qcow2 open and first reads, inside a scratch
//! datastore.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("tessera-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = tessera_storage::header::parse(data);
    let dir = scratch();
    let img = dir.join("fuzz.qcow2");
    if std::fs::write(&img, data).is_err() {
        return;
    }
    let _ = tessera_storage::check::check(&img);
    let Ok(ds) = tessera_storage::Datastore::new(dir) else {
        return;
    };
    if let Ok(disk) = tessera_storage::Disk::open(&ds, &img, tessera_storage::Format::Qcow2, false)
    {
        let mut buf = vec![0u8; 4096];
        let size = disk.size();
        for off in [0, size / 2, size.saturating_sub(4096)] {
            let _ = disk.read(&mut buf, off.min(size.saturating_sub(4096)));
        }
    }
});
