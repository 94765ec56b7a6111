//! Helpers shared by the storage tests that run qemu-img and qemu-io.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use tessera_storage::Datastore;

pub fn have_qemu_img() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok()
        && Command::new("qemu-io").arg("--version").output().is_ok();
    if !ok {
        if std::env::var("TESSERA_REQUIRE_QEMU_IMG").as_deref() == Ok("1") {
            panic!("qemu-img and qemu-io are required (TESSERA_REQUIRE_QEMU_IMG=1)");
        }
        eprintln!("\n*** SKIP: qemu-img/qemu-io not installed (package qemu-utils); test did NOT run ***\n");
    }
    ok
}

pub struct Dir(pub PathBuf);
impl Dir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tessera-st-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn p(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn ds(&self) -> Datastore {
        Datastore::new(&self.0).unwrap()
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

pub fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}
