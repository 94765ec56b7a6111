//! The serial console's file, bounded: a guest that prints without end (a boot loop, a
//! hostile kernel) fills at most twice the limit of the host's disk. When the file would pass
//! the limit it becomes `FILE.1` (replacing the previous one) and a fresh `FILE` starts, as
//! logrotate's copy-less rotation does; readers tailing `FILE` reopen it by name.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Default limit of one console file (two are kept).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

/// An append-only console file rotated at a size limit.
pub struct RotatingLog {
    path: PathBuf,
    max: u64,
    file: File,
    size: u64,
    rotations: u64,
}

fn open(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl RotatingLog {
    /// Appends to `path` (kept below `max` bytes, the previous part in `path.1`).
    pub fn open(path: &Path, max: u64) -> io::Result<Self> {
        let (file, size) = open(path)?;
        let mut log = Self {
            path: path.to_path_buf(),
            max: max.max(1),
            file,
            size,
            rotations: 0,
        };
        if log.size >= log.max {
            log.rotate()?;
        }
        Ok(log)
    }

    /// Times the file was rotated since it was opened.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        (self.file, self.size) = open(&self.path)?;
        self.rotations += 1;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        // Never more than the limit into one file, even from one large write.
        let room = (self.max - self.size).max(1) as usize;
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_limit_and_keeps_two_parts() {
        let dir = std::env::temp_dir().join(format!("tessera-console-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        std::fs::write(&path, b"earlier boot\n").unwrap();
        let mut log = RotatingLog::open(&path, 1000).unwrap();
        for i in 0..500u32 {
            log.write_all(format!("line {i:05}\n").as_bytes()).unwrap();
        }
        let cur = std::fs::read_to_string(&path).unwrap();
        let prev = std::fs::read_to_string(dir.join("console.log.1")).unwrap();
        assert!(
            cur.len() <= 1000 && prev.len() <= 1000,
            "{} {}",
            cur.len(),
            prev.len()
        );
        assert!(cur.ends_with("line 00499\n"), "the newest output is kept");
        // Nothing lost at the seam: the previous part ends right before the current one.
        let first: u32 = cur.lines().next().unwrap()[5..].parse().unwrap();
        assert!(
            prev.ends_with(&format!("line {:05}\n", first - 1)),
            "{prev}"
        );
        assert!(log.rotations() >= 5);
        // One write larger than the limit is split across files, never past it.
        log.write_all(&[b'x'; 2500]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
