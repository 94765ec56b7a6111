//! libvirt, the peer of bench-broker's provisioning: it makes the same N desktops the broker's
//! reconciler does, in the same run, so the provisioning row has a ratio.
//!
//! What is equal: both sides create, per desktop, a qcow2 linked clone on one base image (a
//! qemu-img process per volume on libvirt's side, tessera-storage in the agent on ours) and
//! register a VM definition (1 vCPU, the bench pool's memory, direct kernel boot, the clone as a
//! virtio disk, a SPICE display) that survives a restart; neither boots a guest.
//! What is not: ours goes broker -> agent over mutual TLS (a full handshake per call), lists the
//! datastore, and records every step in SQLite; libvirt's goes from one virsh client over its
//! Unix socket and writes domain XML under /etc/libvirt/qemu. Ours imports the base into its
//! datastore in its first round; libvirt's base is copied into the pool before the clock starts.
//! libvirt writes qcow2 version 2 (compat 0.10) overlays, ours version 3. virsh reads its
//! commands through readline, a few microseconds per byte, which its time includes.
//!
//! All of libvirt's side goes through ONE `virsh` process fed commands on stdin, so its process
//! start and connection are not counted and no process is started per desktop (libvirt itself
//! runs qemu-img per volume: that is its real cost). The clock runs from writing the first
//! command to reading the answer to the last. Cleanup (undefine, vol-delete, pool-destroy) runs
//! after, untimed, in a second virsh process.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The system instance: where qemu-img runs as the daemon (root) and domains are persistent.
const URI: &str = "qemu:///system";

/// Markers the session echoes; the quotes keep virsh's echo of the command line itself from
/// containing them.
const READY: (&str, &[u8]) = ("echo tessera-'ready'", b"tessera-ready");
const DONE: (&str, &[u8]) = ("echo tessera-'done'", b"tessera-done");

/// What both sides provision: `n` linked clones of `base` (`capacity` bytes, qcow2), each the
/// disk of a VM definition with `memory_mib` that boots `kernel` directly.
pub struct Job<'a> {
    pub base: &'a Path,
    pub capacity: u64,
    pub kernel: &'a Path,
    pub memory_mib: i64,
    pub n: usize,
}

/// A connection-tested libvirt; stops the libvirtd it started, if it started one, when dropped.
pub struct Libvirt {
    scratch: PathBuf,
    daemon: Option<Child>,
}

impl Libvirt {
    /// libvirt on this machine, with libvirtd started (in the foreground, as our child) when
    /// nothing answers on qemu:///system. None, after a loud SKIP line, when libvirt is not
    /// installed or does not come up: the harness installs nothing and runs on without the peer.
    pub fn open(scratch: &Path) -> Option<Self> {
        match Self::try_open(scratch) {
            Ok(l) => Some(l),
            Err(why) => {
                println!("*** SKIP the libvirt peer: {why:#} ***");
                None
            }
        }
    }

    fn try_open(scratch: &Path) -> Result<Self> {
        std::fs::create_dir_all(scratch)?;
        let mut me = Self {
            scratch: scratch.to_path_buf(),
            daemon: None,
        };
        if Command::new("virsh")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            bail!("virsh is not installed (Debian: apt-get install libvirt-daemon-system libvirt-clients)");
        }
        if answers() {
            return Ok(me);
        }
        // No systemd here to socket-activate it (containers, chroots): start it ourselves.
        let libvirtd = ["/usr/sbin/libvirtd", "/usr/local/sbin/libvirtd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("qemu:///system does not answer and libvirtd is not installed (Debian: apt-get install libvirt-daemon-system)")?;
        let log = scratch.join("libvirtd.log");
        let out = std::fs::File::create(&log)?;
        let daemon = Command::new(&libvirtd)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", libvirtd.display()))?;
        println!(
            "libvirt peer: libvirtd was not running; started it (pid {}), stopped at the end",
            daemon.id()
        );
        me.daemon = Some(daemon);
        let t = Instant::now();
        while !answers() {
            let exited = me.daemon.as_mut().and_then(|d| d.try_wait().ok().flatten());
            if exited.is_some() || t.elapsed() > Duration::from_secs(15) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(3)..];
                bail!(
                    "libvirtd {} ({URI} needs root); its last words: {}",
                    exited.map_or("did not answer within 15 s".into(), |s| format!(
                        "exited ({s})"
                    )),
                    tail.join(" / ")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    /// Provisions `job.n` desktops in a pool and domains named after this process and `round`;
    /// the time from the first command to the last answer. Removes all of it afterwards.
    pub fn provision(&self, job: &Job, round: usize) -> Result<Duration> {
        let tag = format!("tessera-{}-r{round}", std::process::id());
        let dir = self.scratch.join(&tag);
        let (pool_dir, xml_dir) = (dir.join("pool"), dir.join("xml"));
        std::fs::create_dir_all(&pool_dir)?;
        std::fs::create_dir_all(&xml_dir)?;
        // The base enters the pool as its volume "base" before the clock, as the agent's
        // library file enters the datastore (ours times that once, in its first round).
        std::fs::copy(job.base, pool_dir.join("base"))?;
        // The definitions as files for `define`, which virsh reads relative to its directory.
        let kernel = plain(job.kernel)?;
        for i in 0..job.n {
            std::fs::write(
                xml_dir.join(format!("d{i:05}.xml")),
                domain_xml(
                    &format!("{tag}-d{i:05}"),
                    job,
                    &kernel,
                    &pool_dir.join(format!("d{i:05}")),
                )?,
            )?;
        }
        let timed = session(&xml_dir, &tag, &pool_dir, job);
        let cleaned = cleanup(&xml_dir, &tag, job.n);
        let _ = std::fs::remove_dir_all(&dir);
        // A failed session leaves some of the names behind it absent, which cleanup then
        // reports; the session's error is the one that matters.
        let took = timed?;
        cleaned?;
        Ok(took)
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            if !matches!(d.try_wait(), Ok(None)) {
                return;
            }
            // SIGTERM so that it removes its sockets and pid file; SIGKILL if it hangs.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(d.id().to_string())
                .status();
            let t = Instant::now();
            while matches!(d.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// Whether qemu:///system takes a connection.
fn answers() -> bool {
    Command::new("virsh")
        .args(["-c", URI, "uri"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `p` as text that needs no escaping in virsh's quotes or in XML.
fn plain(p: &Path) -> Result<String> {
    let s = p.to_str().context("non-UTF-8 path")?;
    if s.contains(['\'', '"', '&', '<', '>', '\\']) {
        bail!("{s}: a path with quotes, '&', '<', '>' or '\\' is not supported");
    }
    Ok(s.to_string())
}

/// The domain: what the broker's VM spec for a bench desktop says, in libvirt's terms.
fn domain_xml(name: &str, job: &Job, kernel: &str, disk: &Path) -> Result<String> {
    Ok(format!(
        "<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{kernel}</kernel></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <graphics type='spice' autoport='yes'/>
    <video><model type='bochs'/></video>
  </devices>
</domain>
",
        memory = job.memory_mib,
        disk = plain(disk)?
    ))
}

/// A `virsh -c qemu:///system` reading commands on stdin, in `cwd`, in the C locale (its
/// answers are matched below).
fn virsh(cwd: &Path) -> Result<Child> {
    Command::new("virsh")
        .args(["-c", URI])
        .env("LC_ALL", "C")
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run virsh")
}

/// Reads `r` into `out` until `marker` arrives (virsh flushes each answer before it reads the
/// next command).
fn read_until(r: &mut impl Read, out: &mut Vec<u8>, marker: &[u8]) -> Result<()> {
    let mut buf = [0u8; 65536];
    loop {
        let from = out.len().saturating_sub(marker.len());
        let k = r.read(&mut buf)?;
        if k == 0 {
            bail!("virsh ended before {}", String::from_utf8_lossy(marker));
        }
        out.extend_from_slice(&buf[..k]);
        if out[from..].windows(marker.len()).any(|w| w == marker) {
            return Ok(());
        }
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The timed session: the pool and a warm connection first, then per desktop
/// `vol-create-as` (a qcow2 overlay on "base") and `define`, all on one connection.
fn session(xml_dir: &Path, tag: &str, pool_dir: &Path, job: &Job) -> Result<Duration> {
    let mut child = virsh(xml_dir)?;
    let mut stdin = child.stdin.take().context("virsh stdin")?;
    let mut stdout = child.stdout.take().context("virsh stdout")?;
    let mut stderr = child.stderr.take().context("virsh stderr")?;
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut batch = String::new();
    for i in 0..job.n {
        let _ = writeln!(
            batch,
            "vol-create-as {tag} d{i:05} {} --format qcow2 --backing-vol base --backing-vol-format qcow2\ndefine d{i:05}.xml",
            job.capacity
        );
    }
    batch.push_str(DONE.0);
    batch.push_str("\nquit\n");
    let mut out = Vec::new();
    let run = (|| {
        // `version` has the daemon load its QEMU capabilities before the clock starts.
        writeln!(
            stdin,
            "pool-create-as {tag} dir --target '{}'\nversion\n{}",
            plain(pool_dir)?,
            READY.0
        )?;
        read_until(&mut stdout, &mut out, READY.1)?;
        let t = Instant::now();
        // A writer thread, since virsh's answers would fill the pipe before it read all.
        let writer = std::thread::spawn(move || stdin.write_all(batch.as_bytes()));
        read_until(&mut stdout, &mut out, DONE.1)?;
        let took = t.elapsed();
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("virsh writer panicked"))??;
        Ok::<_, anyhow::Error>(took)
    })();
    if run.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let errors = errors.join().unwrap_or_default();
    let took = run.with_context(|| format!("virsh: {}", errors.trim()))?;
    // Every command answers on stdout when it succeeds ("Vol d00000 created", "Domain '..'
    // defined from .."; the echoed commands are in lower case) and on stderr when it fails.
    let (vols, doms) = (count(&out, b"Vol "), count(&out, b" defined from "));
    if vols != job.n || doms != job.n || errors.contains("error:") {
        bail!(
            "libvirt made {vols} volumes and {doms} domains of {}: {}",
            job.n,
            errors.lines().take(4).collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(took)
}

/// Undefines the domains, deletes the volumes (base included) and stops the pool (it is
/// transient, so that removes it); errors name what could not be removed.
fn cleanup(cwd: &Path, tag: &str, n: usize) -> Result<()> {
    let mut cmds = String::new();
    for i in 0..n {
        let _ = writeln!(
            cmds,
            "undefine {tag}-d{i:05}\nvol-delete d{i:05} --pool {tag}"
        );
    }
    let _ = writeln!(
        cmds,
        "vol-delete base --pool {tag}\npool-destroy {tag}\nquit"
    );
    let mut child = virsh(cwd)?;
    let mut stdin = child.stdin.take().context("virsh stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(cmds.as_bytes()));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    let errors = String::from_utf8_lossy(&out.stderr);
    if errors.contains("error:") {
        bail!(
            "libvirt cleanup of {tag}: {}",
            errors.lines().take(4).collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(())
}
