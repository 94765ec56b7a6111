//! VMs on this host: one tessera-vmm process per VM, defined, started, stopped and deleted by
//! the broker's requests, and found again after the agent restarts.
//!
//! Each VM has a directory under `state_dir/vms/NAME` with its definition (`spec.json`), the
//! VMM's config file (`vm.toml`), its control socket (`api.sock`), its console and VMM logs
//! and, while it runs, a `pid` file. VMMs run in their own process group so that they outlive
//! an agent restart; a restarted agent finds them by their pid file, checked against the
//! process's command line (pid reuse), and by their socket answering GET /vm.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::config::AgentConfig;
use crate::disks;
use crate::display::{self, DisplayEndpoint};
use crate::vmm_client::{self, VmmError};

/// Errors managing VMs.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Unknown VM.
    #[error("no VM named {0:?} on this host")]
    NotFound(String),
    /// A definition that breaks a rule.
    #[error("invalid VM definition: {0}")]
    Invalid(String),
    /// The VM is in the wrong state for the request.
    #[error("{0}")]
    State(String),
    /// The VMM failed to start or to answer.
    #[error("{0}")]
    Vmm(String),
    /// Files in the state directory.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A disk problem.
    #[error(transparent)]
    Disk(#[from] disks::DiskError),
}

/// A disk of a VM: a file in one of the host's datastores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDisk {
    /// Datastore name.
    pub datastore: String,
    /// File name in it.
    pub file: String,
    /// Read-only.
    #[serde(default)]
    pub readonly: bool,
    /// Its format as recorded (default qcow2: clones and imported bases); the VMM opens it
    /// in this format and never guesses from content a guest may have written.
    #[serde(default = "qcow2")]
    pub format: tessera_storage::Format,
}

fn qcow2() -> tessera_storage::Format {
    tessera_storage::Format::Qcow2
}

/// What the broker asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Name (the desktop's name).
    pub name: String,
    /// vCPUs.
    pub vcpus: u16,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// A Linux kernel to boot directly (a file in the image library); or give `firmware`.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Initrd.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Disks in PCI order.
    #[serde(default)]
    pub disks: Vec<VmDisk>,
    /// A display (the bochs adapter) served over SPICE on a port of the host's range.
    #[serde(default)]
    pub display: bool,
    /// UEFI firmware to boot instead of a kernel (a file in the image library, such as
    /// OVMF_CODE_4M.fd); it boots what the disks hold. The VM gets its own variable store
    /// (`uefi-vars.fd` in its directory), made from the template beside the firmware
    /// (OVMF_VARS_4M.fd) at its first start and kept across starts: its boot entries.
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    /// Hyper-V enlightenments (Windows guests).
    #[serde(default)]
    pub hyperv: bool,
    /// A TPM 2.0 (Windows 11 requires one), backed by swtpm, which the VMM starts. Its state
    /// (the TPM's identity, and the keys sealed to it: BitLocker's) lives in `tpm/` in the
    /// VM's directory, kept across starts and deleted with the VM.
    #[serde(default)]
    pub tpm: bool,
}

/// The VM's TPM state directory, in its directory.
const TPM_DIR: &str = "tpm";

/// The VM's own UEFI variable store, in its directory.
const VARS_FILE: &str = "uefi-vars.fd";

/// The variable store template that comes with `firmware` in the image library: edk2's and
/// Debian's naming, OVMF_CODE_4M.fd beside OVMF_VARS_4M.fd.
fn vars_template(cfg: &AgentConfig, firmware: &Path) -> Result<PathBuf, VmError> {
    let name = firmware
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.contains("CODE"))
        .ok_or_else(|| {
            VmError::Invalid(format!(
                "firmware {}: its name must contain CODE, with the VARS template beside it",
                firmware.display()
            ))
        })?;
    let template = firmware.with_file_name(name.replacen("CODE", "VARS", 1));
    Ok(disks::library_file(cfg, &template)?)
}

/// A VM as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmStatus {
    /// Name.
    pub name: String,
    /// "running", "paused", "stopped".
    pub state: String,
    /// The VMM's process ID while it runs.
    pub pid: Option<u32>,
    /// The VMM's own report (GET /vm) while it runs.
    pub vmm: Option<serde_json::Value>,
    /// The definition.
    pub spec: VmSpec,
    /// Where its display is reached, while it runs with one.
    pub display: Option<DisplayEndpoint>,
}

/// How to stop a VM (the body of `POST /api/v1/vms/NAME/stop`; empty means the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// Power off at once, without asking the guest.
    #[serde(default)]
    pub force: bool,
    /// How long the guest gets after the power button; default: the agent's
    /// `guest_shutdown_timeout_secs`.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The answer to a stop request: how it ended, and the VM's status after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopReply {
    /// How it ended.
    pub outcome: StopOutcome,
    /// The VM now.
    #[serde(flatten)]
    pub status: VmStatus,
}

/// How a stop ended (in the answer to a stop request; the broker records it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// The VM was not running.
    NotRunning,
    /// The guest shut down after the ACPI power button.
    GuestShutDown,
    /// The guest did not shut down within the timeout after the button: powered off.
    GuestTimedOut,
    /// No guest listened for the button (no ACPI-aware OS up): powered off at once.
    GuestNotListening,
    /// Powered off, as the request said.
    Forced,
}

impl StopOutcome {
    /// In words, for events and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NotRunning => "it was not running",
            Self::GuestShutDown => "the guest shut down after the power button",
            Self::GuestTimedOut => {
                "the guest did not shut down in time after the power button; powered off"
            }
            Self::GuestNotListening => {
                "the guest was not listening for the power button; powered off"
            }
            Self::Forced => "powered off",
        }
    }
}

/// The VMs of this host.
pub struct Supervisor {
    cfg: AgentConfig,
    vmm: PathBuf,
    specs: Mutex<BTreeMap<String, VmSpec>>,
    /// Display ports handed out in this agent's lifetime, by VM: a port is taken from the
    /// moment it is chosen, not only once its VMM is up (starts run concurrently).
    ports: std::sync::Mutex<BTreeMap<String, u16>>,
    /// Each VM's power lock: a start, stop or deletion waits for the one under way, so that
    /// a start asked for during a guest's shutdown boots the VM again once it is down,
    /// instead of answering "running" for a VM about to go.
    power: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a power-off waits for the VMM to exit before killing it.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn io(path: &Path) -> impl Fn(std::io::Error) -> VmError + '_ {
    move |e| VmError::Io(path.display().to_string(), e)
}

impl Supervisor {
    /// Loads the definitions under `state_dir/vms`; running VMMs are found as they are asked
    /// about (their pid files and sockets are the truth).
    pub fn open(cfg: AgentConfig) -> Result<Self, VmError> {
        let dir = cfg.state_dir.join("vms");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut specs = BTreeMap::new();
        for e in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let f = e.path().join("spec.json");
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            match serde_json::from_str::<VmSpec>(&text) {
                Ok(s) => {
                    specs.insert(s.name.clone(), s);
                }
                Err(err) => {
                    tracing::warn!(file = %f.display(), error = %err, "skipping an unreadable VM definition")
                }
            }
        }
        tracing::info!(vms = specs.len(), "VM definitions loaded");
        let names: Vec<String> = specs.keys().cloned().collect();
        let sup = Self {
            vmm: cfg.vmm_binary(),
            cfg,
            specs: Mutex::new(specs),
            ports: std::sync::Mutex::new(BTreeMap::new()),
            power: std::sync::Mutex::new(BTreeMap::new()),
        };
        // VMs still running from before a restart keep their display ports.
        let ports: BTreeMap<String, u16> = names
            .into_iter()
            .filter(|n| sup.live_pid(n).is_some())
            .filter_map(|n| {
                let port = display::recorded(&sup.dir(&n))?.any_port()?;
                Some((n, port))
            })
            .collect();
        *sup.ports.lock().unwrap_or_else(|p| p.into_inner()) = ports;
        Ok(sup)
    }

    /// Waits for and takes `name`'s power lock.
    async fn power_lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .power
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join("vms").join(name)
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.dir(name).join("api.sock")
    }

    /// The VMM's pid, if its process is alive and is this VM's VMM.
    fn live_pid(&self, name: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir(name).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let sock = self.socket(name).display().to_string();
        let ours = cmdline.split(|b| *b == 0).any(|arg| arg == sock.as_bytes());
        ours.then_some(pid)
    }

    /// Records a definition (replacing a stopped VM's).
    pub async fn define(&self, spec: VmSpec) -> Result<(), VmError> {
        disks::check_name(&spec.name)
            .map_err(|_| VmError::Invalid(format!("name {:?}", spec.name)))?;
        if !(1..=32).contains(&spec.vcpus) || !(16..=1 << 20).contains(&spec.memory_mib) {
            return Err(VmError::Invalid(
                "vcpus 1-32 and memory 16 MiB-1 TiB".into(),
            ));
        }
        match (&spec.kernel, &spec.firmware) {
            (Some(kernel), None) => {
                disks::library_file(&self.cfg, kernel)?;
            }
            (None, Some(firmware)) => {
                disks::library_file(&self.cfg, firmware)?;
                vars_template(&self.cfg, firmware)?;
                if spec.initrd.is_some() || spec.cmdline.is_some() {
                    return Err(VmError::Invalid(
                        "initrd and cmdline go with a kernel, not with firmware".into(),
                    ));
                }
            }
            _ => {
                return Err(VmError::Invalid(
                    "give a kernel or UEFI firmware (exactly one)".into(),
                ))
            }
        }
        if let Some(initrd) = &spec.initrd {
            disks::library_file(&self.cfg, initrd)?;
        }
        for d in &spec.disks {
            disks::check_name(&d.file)?;
            let (_, dir) = disks::datastore(&self.cfg, &d.datastore)?;
            if !dir.join(&d.file).is_file() {
                return Err(VmError::Invalid(format!(
                    "disk {}/{} does not exist",
                    d.datastore, d.file
                )));
            }
        }
        let mut specs = self.specs.lock().await;
        if self.live_pid(&spec.name).is_some() {
            // PUT is idempotent: the same definition again is fine (a broker resuming after a
            // crash repeats it); a different one must wait for a stop.
            if specs.get(&spec.name) == Some(&spec) {
                return Ok(());
            }
            return Err(VmError::State(format!(
                "{} is running with another definition; stop it first",
                spec.name
            )));
        }
        let dir = self.dir(&spec.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| VmError::Invalid(e.to_string()))?;
        let tmp = dir.join("spec.json.tmp");
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, dir.join("spec.json")).map_err(io(&dir))?;
        specs.insert(spec.name.clone(), spec);
        Ok(())
    }

    /// The VM's variable store, made from the firmware's template at its first start: created
    /// whole under a temporary name (0600, in one step) and renamed, so a crash leaves either
    /// no store or a complete one, never half a template.
    fn variable_store(&self, name: &str, firmware: &Path) -> Result<PathBuf, VmError> {
        let path = self.dir(name).join(VARS_FILE);
        if path.exists() {
            return Ok(path);
        }
        let template = vars_template(&self.cfg, firmware)?;
        let bytes = std::fs::read(&template).map_err(io(&template))?;
        let tmp = self.dir(name).join(format!("{VARS_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        tracing::info!(vm = name, template = %template.display(), "UEFI variable store created");
        Ok(path)
    }

    /// The VMM's config file for `spec` (with its `[display]` table, if it has one).
    fn vmm_config(&self, spec: &VmSpec, display: Option<toml::Table>) -> Result<String, VmError> {
        let mut t = toml::Table::new();
        let s = |p: &Path| toml::Value::String(p.display().to_string());
        // Confined again at each start: the library may have changed since the definition.
        if let Some(kernel) = &spec.kernel {
            t.insert("kernel".into(), s(&disks::library_file(&self.cfg, kernel)?));
        }
        if let Some(firmware) = &spec.firmware {
            t.insert(
                "firmware".into(),
                s(&disks::library_file(&self.cfg, firmware)?),
            );
            t.insert(
                "firmware_vars".into(),
                s(&self.variable_store(&spec.name, firmware)?),
            );
        }
        if spec.hyperv {
            t.insert("hyperv".into(), toml::Value::Boolean(true));
        }
        if spec.tpm {
            let mut tpm = toml::Table::new();
            tpm.insert("state_dir".into(), s(&self.dir(&spec.name).join(TPM_DIR)));
            t.insert("tpm".into(), toml::Value::Table(tpm));
        }
        if let Some(i) = &spec.initrd {
            t.insert("initrd".into(), s(&disks::library_file(&self.cfg, i)?));
        }
        if let Some(c) = &spec.cmdline {
            t.insert("cmdline".into(), toml::Value::String(c.clone()));
        }
        t.insert(
            "memory".into(),
            toml::Value::String(format!("{}M", spec.memory_mib)),
        );
        t.insert("vcpus".into(), toml::Value::Integer(i64::from(spec.vcpus)));
        t.insert(
            "serial".into(),
            toml::Value::String(format!(
                "file:{}",
                self.dir(&spec.name).join("console.log").display()
            )),
        );
        t.insert(
            "serial_log_max".into(),
            toml::Value::String(format!("{}M", self.cfg.console_log_max_mib.max(1))),
        );
        // A desktop that reboots (Windows Update, an installer) boots again in its VMM.
        t.insert("on_reboot".into(), toml::Value::String("restart".into()));
        let mut disks = Vec::new();
        for d in &spec.disks {
            let (_, dir) = disks::datastore(&self.cfg, &d.datastore)?;
            let mut e = toml::Table::new();
            e.insert("path".into(), s(&dir.join(&d.file)));
            e.insert(
                "format".into(),
                toml::Value::String(d.format.name().to_string()),
            );
            e.insert("datastore".into(), s(&dir));
            e.insert("readonly".into(), toml::Value::Boolean(d.readonly));
            e.insert(
                "serial".into(),
                toml::Value::String(d.file.chars().take(20).collect()),
            );
            disks.push(toml::Value::Table(e));
        }
        t.insert("disks".into(), toml::Value::Array(disks));
        if let Some(d) = display {
            t.insert("display".into(), toml::Value::Table(d));
        }
        toml::to_string(&t).map_err(|e| VmError::Invalid(e.to_string()))
    }

    /// Starts the VM's VMM and waits until its control API answers.
    pub async fn start(&self, name: &str) -> Result<VmStatus, VmError> {
        let spec = self.spec(name).await?;
        let _power = self.power_lock(name).await;
        if self.live_pid(name).is_some() {
            return self.status(name).await;
        }
        let dir = self.dir(name);
        let display = match spec.display {
            true => Some(self.allocate_display(name).await?),
            false => None,
        };
        let cfg_path = dir.join("vm.toml");
        std::fs::write(&cfg_path, self.vmm_config(&spec, display)?).map_err(io(&cfg_path))?;
        let sock = self.socket(name);
        let _ = std::fs::remove_file(&sock);
        let log_path = dir.join("vmm.log");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let err = log.try_clone().map_err(io(&log_path))?;
        let mut cmd = Command::new(&self.vmm);
        cmd.arg("--config")
            .arg(&cfg_path)
            .arg("--api-socket")
            .arg(&sock)
            .args(["--log", "info"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group: the VM outlives a restart (or a crash) of the agent.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| VmError::Vmm(format!("cannot start {}: {e}", self.vmm.display())))?;
        let pid = child.id();
        std::fs::write(dir.join("pid"), pid.to_string()).map_err(io(&dir))?;
        // Reap it when it ends, and keep its exit status for the status report.
        let exit_file = dir.join("exit");
        let _ = std::fs::remove_file(&exit_file);
        let reaped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (file, flag) = (exit_file.clone(), reaped.clone());
        std::thread::spawn(move || {
            if let Ok(st) = child.wait() {
                let _ = std::fs::write(&file, st.code().map_or("signal".into(), |c| c.to_string()));
            }
            flag.store(true, std::sync::atomic::Ordering::Release);
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Until it execs, the child's command line is still ours, so liveness here is
            // "not reaped yet", not live_pid.
            let alive = !reaped.load(std::sync::atomic::Ordering::Acquire);
            match vmm_client::call(&sock, Method::GET, "/vm", API_TIMEOUT).await {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline && alive => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: String = tail
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Err(VmError::Vmm(format!(
                        "{name} did not come up ({e}); its log ends:\n{tail}"
                    )));
                }
            }
        }
        tracing::info!(vm = name, pid, "VM started");
        self.status(name).await
    }

    /// Stops the VM as `how` says: unless forced, the ACPI power button first and the guest's
    /// own shutdown awaited (the request's timeout, or `guest_shutdown_timeout_secs`); then,
    /// if the VM still runs, a power-off ([`Supervisor::power_off`]). Returns which happened.
    pub async fn stop(&self, name: &str, how: &StopRequest) -> Result<StopOutcome, VmError> {
        self.spec(name).await?;
        let _power = self.power_lock(name).await;
        let Some(pid) = self.live_pid(name) else {
            return Ok(StopOutcome::NotRunning);
        };
        let outcome = if how.force {
            StopOutcome::Forced
        } else {
            let timeout = Duration::from_secs(
                how.timeout_secs
                    .unwrap_or(self.cfg.guest_shutdown_timeout_secs),
            );
            let pressed = vmm_client::call(
                &self.socket(name),
                Method::PUT,
                "/vm/power-button",
                API_TIMEOUT,
            )
            .await;
            match pressed {
                Ok(answer) if answer["listening"] == true => {
                    tracing::info!(
                        vm = name,
                        ?timeout,
                        "ACPI power button pressed; waiting for the guest to shut down"
                    );
                    if self.wait_gone(name, timeout).await {
                        tracing::info!(vm = name, pid, "the guest shut down");
                        self.release_display(name);
                        return Ok(StopOutcome::GuestShutDown);
                    }
                    StopOutcome::GuestTimedOut
                }
                // No ACPI-aware OS is up (still booting, or none), or the VMM does not answer.
                _ => StopOutcome::GuestNotListening,
            }
        };
        tracing::warn!(
            vm = name,
            pid,
            outcome = outcome.describe(),
            "powering the VM off"
        );
        self.power_off(name, pid).await?;
        Ok(outcome)
    }

    /// Whether the VM's process is gone within `limit`.
    async fn wait_gone(&self, name: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.live_pid(name).is_none() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Powers the VM off: the VMM ends it at once through its API (flushing its disks), and
    /// is killed if it has not exited within `STOP_GRACE`.
    async fn power_off(&self, name: &str, pid: u32) -> Result<(), VmError> {
        let sock = self.socket(name);
        let _ = vmm_client::call(&sock, Method::PUT, "/vm/shutdown", API_TIMEOUT).await;
        if self.wait_gone(name, STOP_GRACE).await {
            self.release_display(name);
            return Ok(());
        }
        tracing::warn!(vm = name, pid, "VM did not stop in time; killing it");
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        if self.wait_gone(name, Duration::from_secs(2)).await {
            self.release_display(name);
            return Ok(());
        }
        Err(VmError::Vmm(format!("{name} (pid {pid}) survived SIGKILL")))
    }

    /// Removes a stopped VM's definition (its disks stay: the broker deletes those).
    pub async fn delete(&self, name: &str) -> Result<(), VmError> {
        let _power = self.power_lock(name).await;
        let mut specs = self.specs.lock().await;
        if !specs.contains_key(name) {
            return Err(VmError::NotFound(name.to_string()));
        }
        if self.live_pid(name).is_some() {
            return Err(VmError::State(format!("{name} is running; stop it first")));
        }
        let dir = self.dir(name);
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        specs.remove(name);
        self.release_display(name);
        self.power
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    async fn spec(&self, name: &str) -> Result<VmSpec, VmError> {
        self.specs
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| VmError::NotFound(name.to_string()))
    }

    /// One VM's status, asking its VMM when it runs.
    pub async fn status(&self, name: &str) -> Result<VmStatus, VmError> {
        let spec = self.spec(name).await?;
        let pid = self.live_pid(name);
        let vmm = match pid {
            Some(_) => {
                match vmm_client::call(&self.socket(name), Method::GET, "/vm", API_TIMEOUT).await {
                    Ok(v) => Some(v),
                    Err(VmmError::Unreachable(..)) => None,
                    Err(e) => return Err(VmError::Vmm(e.to_string())),
                }
            }
            None => None,
        };
        let state = match (&pid, &vmm) {
            (Some(_), Some(v)) => v
                .get("state")
                .and_then(|s| s.as_str())
                .unwrap_or("running")
                .to_string(),
            (Some(_), None) => "starting".into(),
            _ => "stopped".into(),
        };
        let display = match (pid, spec.display) {
            (Some(_), true) => display::recorded(&self.dir(name)),
            _ => None,
        };
        Ok(VmStatus {
            name: name.to_string(),
            state,
            pid,
            vmm,
            spec,
            display,
        })
    }

    /// A display port for `name`, not used by another VM that runs or is starting: every
    /// port is reserved when chosen, under one lock (starts run concurrently).
    async fn allocate_display(&self, name: &str) -> Result<toml::Table, VmError> {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        ports.remove(name);
        let taken: Vec<u16> = ports.values().copied().collect();
        let (endpoint, table) =
            display::allocate(&self.cfg.display, &self.dir(name), &taken).map_err(VmError::Vmm)?;
        if let Some(p) = endpoint.any_port() {
            ports.insert(name.to_string(), p);
        }
        tracing::info!(vm = name, ?endpoint.port, ?endpoint.tls_port, "display port allocated");
        Ok(table)
    }

    /// Gives a stopped VM's display port back.
    fn release_display(&self, name: &str) {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Sets the one-time ticket of a running VM's display.
    pub async fn set_ticket(
        &self,
        name: &str,
        ticket: &str,
        lifetime: Duration,
    ) -> Result<(), VmError> {
        let body = serde_json::json!({ "ticket": ticket, "lifetime_secs": lifetime.as_secs() });
        self.display_call(name, Method::PUT, "/display/ticket", Some(&body))
            .await
    }

    /// Ends a running VM's display connections: its ticket is cleared and the connected
    /// client cut off (the session it belonged to ended). A stopped VM has none: done.
    pub async fn disconnect_display(&self, name: &str) -> Result<(), VmError> {
        if self.live_pid(name).is_none() {
            self.spec(name).await?;
            return Ok(());
        }
        self.display_call(name, Method::POST, "/display/disconnect", None)
            .await
    }

    /// A call to the display part of a running VM's control API.
    async fn display_call(
        &self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), VmError> {
        let spec = self.spec(name).await?;
        if !spec.display {
            return Err(VmError::State(format!("{name} has no display")));
        }
        if self.live_pid(name).is_none() {
            return Err(VmError::State(format!("{name} is not running")));
        }
        vmm_client::call_with(&self.socket(name), method, path, body, API_TIMEOUT)
            .await
            .map_err(|e| match e {
                VmmError::Status { status: 400, body } => VmError::Invalid(body),
                e => VmError::Vmm(e.to_string()),
            })?;
        Ok(())
    }

    /// Every VM.
    pub async fn list(&self) -> Result<Vec<VmStatus>, VmError> {
        let names: Vec<String> = self.specs.lock().await.keys().cloned().collect();
        let mut v = Vec::new();
        for n in names {
            v.push(self.status(&n).await?);
        }
        Ok(v)
    }

    /// Whether a running VM has `disk` attached.
    pub async fn disk_in_use(&self, disk: &Path) -> bool {
        let specs = self.specs.lock().await.clone();
        specs.values().any(|s| {
            self.live_pid(&s.name).is_some()
                && s.disks.iter().any(|d| {
                    disks::datastore(&self.cfg, &d.datastore)
                        .map(|(_, dir)| dir.join(&d.file) == disk)
                        .unwrap_or(false)
                })
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }
}
