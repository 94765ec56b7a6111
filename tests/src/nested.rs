//! The nested harness: tessera-vmm inside a QEMU TCG guest (L1) whose emulated AMD-V CPU gives
//! it a real /dev/kvm, because the build machines' own /dev/kvm (PVM) cannot run a stock kernel
//! (shared/research/nested-kvm.md). L1's initramfs is built once by `tests/nested/build-l1.sh`;
//! L1 runs one or more scenarios of `tests/nested/scenarios/` in order and powers off.
//!
//! Every run has a budget. A run that overruns it is diagnosed before it is stopped: QEMU's
//! monitor tells where each vCPU is (`info cpus`, `info registers -a`), magic SysRq asks L1's
//! kernel for every CPU's stack and the blocked tasks, and an NMI makes it panic with all
//! backtraces; the report ends the error with L1's last console lines. QEMU dies with the
//! thread that started it (parent-death signal) and when the [`L1`] is dropped, whatever
//! happened.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::DieWithParent;

/// What can go wrong with a nested run.
#[derive(Debug, thiserror::Error)]
pub enum NestError {
    #[error("building L1's image failed: {0}")]
    Build(String),
    #[error("starting QEMU failed: {0}")]
    Start(#[source] std::io::Error),
    #[error(
        "the nested run `{name}` overran its budget waiting for {what} ({secs} s in){}; \
         diagnosis (also in {report_path}):\n{report}",
        if *guest_never_ran { " with its guest stuck before userspace" } else { "" }
    )]
    Overrun {
        name: String,
        what: String,
        secs: u64,
        report_path: String,
        report: String,
        /// A scenario's overrun whose L2 guest printed nothing of its userspace (no `tg: `
        /// line, no ready marker) on L1's console: it hung in firmware or kernel boot.
        guest_never_ran: bool,
    },
    #[error("L1 (`{name}`) ended ({status}) before {what}; its console ends:\n{tail}")]
    Exited {
        name: String,
        what: String,
        status: String,
        tail: String,
    },
    #[error(
        "L1 (`{name}`) stalled while waiting for {what}: its console, heartbeat included, was \
         silent for {silent} s ({secs} s in); diagnosis (also in {report_path}):\n{report}"
    )]
    Stalled {
        name: String,
        what: String,
        secs: u64,
        silent: u64,
        report_path: String,
        report: String,
    },
}

impl NestError {
    /// L1 itself failed (froze, or died), as opposed to a scenario failing or overrunning
    /// while L1 ran on: the harness's own flake (TCG's emulated AMD-V under L1's KVM loses an
    /// interrupt now and then, and L1's clock stops; ARCHITECTURE.md, "Testing"), which a
    /// test may answer by running again on a fresh L1.
    pub fn is_l1_failure(&self) -> bool {
        matches!(self, Self::Stalled { .. } | Self::Exited { .. })
    }

    /// A scenario overran with its L2 guest hung before userspace, L1 running on: L1's KVM
    /// on L0's emulated AMD-V losing an L2 vCPU's interrupt or INIT/SIPI, as it does now and
    /// then (seen 2026-12-06 in the hyperv scenario: L2's vCPU 0 in KVM_RUN, vCPU 1 halted,
    /// no line from L2's kernel in 300 s, where the same scenario takes 13-15 s). Treated as
    /// the harness's flake like [`Self::is_l1_failure`]; a VMM that hangs every boot still
    /// fails every retry.
    pub fn is_guest_boot_hang(&self) -> bool {
        matches!(
            self,
            Self::Overrun {
                guest_never_ran: true,
                ..
            }
        )
    }
}

/// L1's init prints a heartbeat every 20 s of its own time: a console silent for this long
/// means L1 no longer runs (its clock stopped), whatever its scenario does.
const SILENCE: Duration = Duration::from_secs(75);

/// The cache directory (TESSERA_CACHE, default `<repo>/.cache`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TESSERA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache"))
}

/// The QEMU that runs L1: the system's, or for scenarios that say `# nest: backports-l0`
/// (UEFI guests, which abort the system's QEMU 7.2 at once) the newer one that
/// tests/nested/l0-qemu.sh fetches (run.sh runs it for them).
fn l0_qemu(backports: bool) -> std::io::Result<PathBuf> {
    if !backports {
        return Ok("qemu-system-x86_64".into());
    }
    let path = cache_dir().join("qemu-l0/root/usr/bin/qemu-system-x86_64");
    if path.exists() {
        Ok(path)
    } else {
        Err(std::io::Error::other(format!(
            "{} is missing: run tests/nested/l0-qemu.sh",
            path.display()
        )))
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository")
        .to_path_buf()
}

/// Builds (or checks) L1's images, once per process; build-l1.sh itself serialises
/// concurrent processes.
pub fn build_image() -> Result<(), NestError> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if *built {
        return Ok(());
    }
    let out = Command::new(repo().join("tests/nested/build-l1.sh"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NestError::Build(e.to_string()))?;
    if !out.status.success() {
        return Err(NestError::Build(format!(
            "{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    *built = true;
    Ok(())
}

/// How to run L1.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Names the console log (`$TESSERA_CACHE/nested/NAME.log`) and the diagnosis.
    pub name: String,
    pub scenarios: Vec<String>,
    /// A file holding a tar archive of a datastore (zero-padded): L1 unpacks it into /ds
    /// before the scenarios and writes /ds back into it afterwards.
    pub disk: Option<PathBuf>,
    /// A host TCP port on 127.0.0.1 forwarded to L1's 10.0.2.15:5930 (L1 then has a
    /// virtio-net NIC on QEMU's user network).
    pub hostfwd: Option<u16>,
    /// Extra words for L1's kernel command line (`nest.runs=3`; `NAME=value` words reach the
    /// scenarios as environment variables).
    pub args: Vec<String>,
    pub mem: String,
    pub smp: u32,
    /// The whole run, boot to power-off.
    pub budget: Duration,
}

impl Spec {
    /// Defaults: 2048M, 2 vCPUs (NEST_MEM, NEST_SMP override), 10 minutes.
    pub fn new(name: &str, scenarios: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
            disk: None,
            hostfwd: None,
            args: Vec::new(),
            mem: std::env::var("NEST_MEM").unwrap_or_else(|_| "2048M".into()),
            smp: std::env::var("NEST_SMP")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2),
            budget: Duration::from_secs(600),
        }
    }

    /// Whether a scenario's script has the line `# nest: WHAT`.
    fn any_says(&self, what: &str) -> bool {
        let line = format!("# nest: {what}");
        self.scenarios.iter().any(|s| {
            std::fs::read_to_string(repo().join(format!("tests/nested/scenarios/{s}.sh")))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == line))
        })
    }

    /// Whether a scenario needs QEMU inside L1 (`# nest: qemu`).
    fn needs_qemu(&self) -> bool {
        self.any_says("qemu")
    }

    /// Builds the image if needed and boots L1.
    pub fn start(self) -> Result<L1, NestError> {
        build_image()?;
        let dir = cache_dir().join("nested");
        let image = dir.join(if self.needs_qemu() {
            "l1-qemu.cpio.gz"
        } else {
            "l1.cpio.gz"
        });
        let console = dir.join(format!("{}.log", self.name));
        let stderr = dir.join(format!("{}.qemu-stderr", self.name));
        let rundir = std::env::temp_dir().join(format!(
            "tessera-nest-{}-{}-{}",
            self.name,
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&rundir).map_err(NestError::Start)?;
        let qmp = rundir.join("qmp.sock");
        let _ = std::fs::remove_file(&console);
        // Kernel flags that make a stalled L1 say why: soft lockups and RCU stalls print every
        // CPU's stack, hung tasks are reported after 60 s, SysRq is open to the harness, and an
        // NMI from the harness panics with every CPU's backtrace (panic_print=0x40).
        let cmdline = format!(
            "console=ttyS0 panic=-1 loglevel=5 softlockup_all_cpu_backtrace=1 \
             sysctl.kernel.hung_task_timeout_secs=60 sysctl.kernel.hung_task_all_cpu_backtrace=1 \
             sysrq_always_enabled unknown_nmi_panic panic_print=0x40 nest.run={} {}",
            self.scenarios.join(","),
            self.args.join(" ")
        );
        let mut cmd =
            Command::new(l0_qemu(self.any_says("backports-l0")).map_err(NestError::Start)?);
        if let Some(disk) = &self.disk {
            cmd.arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", disk.display()));
        }
        if let Some(port) = self.hostfwd {
            cmd.args([
                "-netdev",
                &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:5930"),
                "-device",
                "virtio-net-pci,netdev=n0",
            ]);
        }
        cmd.args(["-M", "q35", "-accel", "tcg", "-cpu", "EPYC,+svm"])
            .args(["-m", &self.mem, "-smp", &self.smp.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-chardev")
            .arg(format!("file,id=con,path={}", console.display()))
            .args(["-serial", "chardev:con"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-kernel")
            .arg(cache_dir().join("guest/vmlinuz"))
            .arg("-initrd")
            .arg(&image)
            .args(["-append", &cmdline])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).map_err(NestError::Start)?)
            .die_with_parent();
        let child = cmd.spawn().map_err(NestError::Start)?;
        eprintln!(
            "[nested] {}: L1 booting (QEMU TCG, EPYC+svm, {} vCPUs, {}) for {}; console in {}",
            self.name,
            self.smp,
            self.mem,
            self.scenarios.join(","),
            console.display()
        );
        let now = Instant::now();
        Ok(L1 {
            deadline: now + self.budget,
            started: now,
            spec: self,
            child,
            console,
            stderr,
            qmp,
            rundir,
        })
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// One scenario's output and exit status.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The console between the scenario's NEST-BEGIN and NEST-END lines.
    pub log: String,
    pub rc: i32,
}

/// A running L1; killed when dropped.
pub struct L1 {
    spec: Spec,
    child: Child,
    console: PathBuf,
    stderr: PathBuf,
    qmp: PathBuf,
    rundir: PathBuf,
    started: Instant,
    deadline: Instant,
}

impl Drop for L1 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.rundir);
    }
}

impl L1 {
    /// L1's console so far.
    pub fn console(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Where the console is logged.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// Waits until `done` holds for the console (checked every 200 ms), for at most `budget`
    /// and never past the run's own budget. Overrunning diagnoses L1 (see the module's
    /// documentation) and stops it; L1 exiting first is an error with its last console lines.
    pub fn wait_for(
        &mut self,
        what: &str,
        budget: Duration,
        done: impl FnMut(&str) -> bool,
    ) -> Result<String, NestError> {
        match self.wait(what, budget, done)? {
            Some(text) => Ok(text),
            None => Err(self.overrun(what)),
        }
    }

    /// As [`L1::wait_for`], but `budget` running out is an answer (`None`), for a step that
    /// may be retried; only the run's own budget running out diagnoses and stops L1.
    pub fn poll(
        &mut self,
        what: &str,
        budget: Duration,
        done: impl FnMut(&str) -> bool,
    ) -> Result<Option<String>, NestError> {
        let step_ends = Instant::now() + budget;
        match self.wait(what, budget, done)? {
            None if Instant::now() < step_ends => Err(self.overrun(what)),
            r => Ok(r),
        }
    }

    /// `Some(console)` once `done` holds, `None` when `budget` (or the run's) runs out.
    fn wait(
        &mut self,
        what: &str,
        budget: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> Result<Option<String>, NestError> {
        let deadline = self.deadline.min(Instant::now() + budget);
        let (mut heard, mut last_len) = (Instant::now(), 0);
        loop {
            let text = self.console();
            if done(&text) {
                return Ok(Some(text));
            }
            if text.len() != last_len {
                (heard, last_len) = (Instant::now(), text.len());
            } else if heard.elapsed() > SILENCE {
                let (silent, secs) = (heard.elapsed().as_secs(), self.started.elapsed().as_secs());
                eprintln!(
                    "[nested] {}: L1's console silent for {silent} s while waiting for {what}: \
                     L1 stalled; diagnosing it",
                    self.spec.name,
                );
                let (report_path, report) = self.diagnose();
                return Err(NestError::Stalled {
                    name: self.spec.name.clone(),
                    what: what.to_string(),
                    secs,
                    silent,
                    report_path,
                    report,
                });
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The last words may land between the read above and the exit.
                let text = self.console();
                if done(&text) {
                    return Ok(Some(text));
                }
                return Err(NestError::Exited {
                    name: self.spec.name.clone(),
                    what: what.to_string(),
                    status: status.to_string(),
                    tail: tail_lines(&text, 60).to_string(),
                });
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for `scenario` to end; its output and status.
    pub fn scenario(&mut self, scenario: &str, budget: Duration) -> Result<Outcome, NestError> {
        let end = format!("NEST-END {scenario} rc=");
        let begin = format!("NEST-BEGIN {scenario}");
        let result = self.wait_for(&format!("the end of scenario {scenario}"), budget, |t| {
            t.contains(&end)
        });
        let text = match result {
            Err(mut e @ NestError::Overrun { .. }) => {
                let console = self.console();
                let since = console.rfind(&begin).map_or("", |i| &console[i..]);
                let guest_ran = since.contains("tg: ") || since.contains("TESSERA-GUEST-READY");
                if let NestError::Overrun {
                    guest_never_ran, ..
                } = &mut e
                {
                    *guest_never_ran = !since.is_empty() && !guest_ran;
                }
                return Err(e);
            }
            r => r?,
        };
        Ok(scenario_outcome(&text, scenario).expect("the end marker was just seen"))
    }

    /// Waits for L1 to power off after its last scenario.
    pub fn finish(mut self, budget: Duration) -> Result<String, NestError> {
        let text = self.wait_for("L1's power-off", budget, |t| t.contains("NEST-DONE"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(text)
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Diagnoses L1 after an overrun, then stops it.
    fn overrun(&mut self, what: &str) -> NestError {
        let secs = self.started.elapsed().as_secs();
        eprintln!(
            "[nested] {}: overran waiting for {what} after {secs} s: diagnosing L1",
            self.spec.name
        );
        let (report_path, report) = self.diagnose();
        NestError::Overrun {
            name: self.spec.name.clone(),
            what: what.to_string(),
            secs,
            report_path,
            report,
            guest_never_ran: false,
        }
    }

    /// Gathers what L1 was doing, then stops it: the report, and the file it is kept in.
    fn diagnose(&mut self) -> (String, String) {
        let mut report = String::new();
        let before = self.console().len();
        match Qmp::connect(&self.qmp) {
            Ok(mut qmp) => {
                for cmd in ["info status", "info cpus", "info registers -a"] {
                    report.push_str(&format!("--- (qemu) {cmd}\n"));
                    report.push_str(&qmp.hmp(cmd).unwrap_or_else(|e| format!("failed: {e}\n")));
                }
                // SysRq l (every CPU's backtrace) and w (blocked tasks) leave L1 running; the
                // NMI afterwards panics it (unknown_nmi_panic) with all backtraces, which
                // also works where a CPU no longer takes keyboard interrupts.
                for key in ["alt-sysrq-l", "alt-sysrq-w"] {
                    let _ = qmp.hmp(&format!("sendkey {key}"));
                    std::thread::sleep(Duration::from_secs(3));
                }
                let _ = qmp.hmp("nmi");
                std::thread::sleep(Duration::from_secs(8));
                report.push_str("--- (qemu) info registers -a, after the NMI\n");
                report.push_str(
                    &qmp.hmp("info registers -a")
                        .unwrap_or_else(|e| format!("failed: {e}\n")),
                );
            }
            Err(e) => report.push_str(&format!("QEMU's monitor unreachable: {e}\n")),
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = self.console();
        let qemu_err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let console_before = &text[..before.min(text.len())];
        report.push_str(&format!(
            "--- QEMU's stderr:\n{}\n--- L1's console before the diagnosis (last 80 lines):\n{}\n\
             --- L1's console during the diagnosis (SysRq, NMI):\n{}\n",
            qemu_err.trim(),
            tail_lines(console_before, 80),
            tail_lines(&text[console_before.len()..], 400),
        ));
        let path = self.console.with_extension("diag");
        let _ = std::fs::write(&path, &report);
        (path.display().to_string(), report)
    }
}

/// The output and status of `scenario` in a console log, once it has ended.
pub fn scenario_outcome(text: &str, scenario: &str) -> Option<Outcome> {
    let begin = format!("NEST-BEGIN {scenario}");
    let end = format!("NEST-END {scenario} rc=");
    // The marker's own line, whatever ends it (the serial console may send "\r\n"); not a
    // longer scenario name that starts the same.
    let start = text
        .match_indices(&begin)
        .map(|(i, _)| i + begin.len())
        .find(|&i| matches!(text.as_bytes().get(i), Some(b'\r' | b'\n')))
        .map_or(0, |i| i + text[i..].find('\n').map_or(0, |n| n + 1));
    let stop = start + text[start..].find(&end)?;
    let rc = text[stop + end.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or(-1);
    Some(Outcome {
        log: text[start..stop].to_string(),
        rc,
    })
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

/// QEMU's machine protocol, for human monitor commands (their text output).
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> std::io::Result<Self> {
        let writer = UnixStream::connect(path)?;
        writer.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut qmp = Self {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        };
        qmp.reply()?; // the greeting
        qmp.execute(&serde_json::json!({"execute": "qmp_capabilities"}))?;
        Ok(qmp)
    }

    fn reply(&mut self) -> std::io::Result<serde_json::Value> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("QEMU closed its monitor"));
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(std::io::Error::other)?;
            // Asynchronous events are interleaved with replies.
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    fn execute(&mut self, cmd: &serde_json::Value) -> std::io::Result<serde_json::Value> {
        writeln!(self.writer, "{cmd}")?;
        let v = self.reply()?;
        match v.get("return") {
            Some(r) => Ok(r.clone()),
            None => Err(std::io::Error::other(format!("QMP error: {v}"))),
        }
    }

    fn hmp(&mut self, command: &str) -> std::io::Result<String> {
        let r = self.execute(&serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": {"command-line": command}
        }))?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_scenarios_output_and_status() {
        let log = "boot noise\nNEST-BEGIN boot\nline a\nNEST-END boot rc=0\nNEST-BEGIN disk\nb\nNEST-END disk rc=3\n";
        let boot = scenario_outcome(log, "boot").unwrap();
        assert_eq!((boot.log.as_str(), boot.rc), ("line a\n", 0));
        let disk = scenario_outcome(log, "disk").unwrap();
        assert_eq!((disk.log.as_str(), disk.rc), ("b\n", 3));
        assert!(scenario_outcome(log, "display").is_none());
        assert!(scenario_outcome("NEST-BEGIN x\nhalf", "x").is_none());
    }

    #[test]
    fn a_scenario_starts_at_its_own_marker_whatever_ends_the_line() {
        // A serial console's "\r\n", and a longer name that starts the same before it.
        let log = "a\r\nNEST-BEGIN boot-verbose\r\nv\r\nNEST-END boot-verbose rc=0\r\n\
                   NEST-BEGIN boot\r\nmine\r\nNEST-END boot rc=0\r\n";
        let boot = scenario_outcome(log, "boot").unwrap();
        assert_eq!((boot.log.as_str(), boot.rc), ("mine\r\n", 0));
    }

    #[test]
    fn tails_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("abc", 5), "abc");
    }
}
