//! The tessera-vmm binary: parse flags, build the VM, serve the API, exit with the VM's status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use tessera_vmm::config::{
    CdromConfig, DiskConfig, DisplayConfig, MemorySize, NetConfig, OnReboot, SerialOutput,
    TpmConfig, VmConfig,
};
use tessera_vmm::exit::{status, ExitReason};
use tessera_vmm::sandbox::ThreadKind;
use tessera_vmm::{api, builder};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const AFTER_HELP: &str = "\
Examples:
  Boot a Linux kernel with its initramfs, console on this terminal:
    tessera-vmm --kernel bzImage --initrd initrd.cpio.gz \\
                --cmdline \"console=ttyS0 reboot=k panic=-1\" --memory 512M --vcpus 2

  Boot UEFI firmware (Debian's ovmf package) with the desktop's own variable store, which
  keeps boot entries across boots; the firmware boots what the disks hold:
    cp /usr/share/OVMF/OVMF_VARS_4M.fd desk-01.vars
    tessera-vmm --firmware /usr/share/OVMF/OVMF_CODE_4M.fd --firmware-vars desk-01.vars \
                --disk path=desk-01.qcow2 --memory 2G --vcpus 2

  The same from a config file (TOML, or JSON if the name ends in .json); flags override it:
    tessera-vmm --config vm.toml --api-socket /run/tessera/vm1.sock

  With a disk (the guest's /dev/vda): a qcow2 linked clone whose backing chain must stay
  inside the datastore directory (default: the image's own directory):
    tessera-vmm --kernel bzImage --disk path=/srv/ds1/desk-01.qcow2,datastore=/srv/ds1

  With a network card (virtio-net, one queue pair per vCPU) on a tap interface that
  tessera-agent made on the desktop's port group, or that you made yourself:
    ip tuntap add desk-01-0 mode tap multi_queue vnet_hdr user tessera
    tessera-vmm --kernel bzImage --vcpus 2 --net tap=desk-01-0,mac=52:54:00:12:34:56

  With a screen, keyboard and mouse served over SPICE (the bochs display adapter; Linux drives
  it with bochs-drm; a USB tablet and keyboard, a virtio tablet, PS/2 keyboard and mouse),
  reachable once a ticket is set:
    tessera-vmm --kernel bzImage --api-socket vm1.sock --display spice-port=5930
    curl --unix-socket vm1.sock -X PUT -d '{\"ticket\": \"S3cret\", \"lifetime_secs\": 60}' \\
         http://localhost/display/ticket
    remote-viewer spice://127.0.0.1:5930    (asks for the ticket)
  SPICE runs in tessera-display, a sandboxed process of its own that tessera-vmm starts (from
  its own directory, PATH, or TESSERA_DISPLAY) and restarts if it dies; the guest runs on.

  Installing Windows from its ISO: the installer's DVD and a SATA disk on the AHCI controller
  (Windows drives both in the box), virtio-win's drivers on a second DVD:
    tessera-vmm --firmware /usr/share/OVMF/OVMF_CODE_4M.fd --firmware-vars win11.vars \
                --disk path=win11.qcow2,bus=sata --cdrom Win11_24H2.iso --cdrom virtio-win.iso \
                --memory 8G --vcpus 4 --hyperv --tpm state=win11-tpm --display spice-port=5930

  A Windows 11 desktop: UEFI, Hyper-V enlightenments and a TPM 2.0, whose state (its keys,
  BitLocker's) lives in the directory given; tessera-vmm starts swtpm (Debian: swtpm) on it:
    tessera-vmm --firmware /usr/share/OVMF/OVMF_CODE_4M.fd --firmware-vars win11.vars \
                --disk path=win11.qcow2 --memory 8G --vcpus 4 --hyperv --tpm state=win11-tpm

  Control a running VM:
    curl --unix-socket /run/tessera/vm1.sock http://localhost/vm
    curl --unix-socket /run/tessera/vm1.sock -X PUT http://localhost/vm/pause
    curl --unix-socket /run/tessera/vm1.sock -X PUT http://localhost/vm/power-button

Config file keys (all optional except kernel or firmware):
  kernel = \"PATH\"          bzImage or ELF
  firmware = \"PATH\"        UEFI firmware instead of a kernel: an OVMF build for QEMU's q35
                           (Debian: /usr/share/OVMF/OVMF_CODE_4M.fd)
  firmware_vars = \"PATH\"   the VM's UEFI variable store, written in place (start from a
                           copy of OVMF_VARS_4M.fd); without it variables last one run
  initrd = \"PATH\"
  cmdline = \"...\"          default: console=ttyS0 reboot=k panic=-1 io_delay=none
  memory = \"512M\"          K, M or G suffix
  vcpus = 1                1 to 32
  serial = \"stdout\"        stdout, off, or file:PATH
  serial_log_max = \"16M\"   file:PATH is rotated to PATH.1 at this size (two parts kept)
  api_socket = \"PATH\"
  [[disks]]                one table per disk, in PCI order
  path = \"PATH\"            raw or qcow2 image
  readonly = false
  queues = N               default: one per vCPU, at most 16
  datastore = \"DIR\"        backing files must be inside; default: the image's directory
  serial = \"ID\"            up to 20 bytes, /sys/block/vda/serial in the guest
  bus = \"virtio\"          or sata: a disk on the AHCI controller (ICH9)
  [[nets]]                 one table per NIC (virtio-net), in PCI order after the disks
  tap = \"NAME\"            the tap interface (multi_queue when queues > 1)
  mac = \"52:54:00:..\"     default: derived from the tap's name, the same every start
  queues = N               queue pairs; default: one per vCPU, at most 16
  mtu = 1500               what the guest is told: the port group's MTU (576 to 9000)
  vhost = \"auto\"          the kernel's vhost-net moves the frames when /dev/vhost-net
                           opens; on: required; off: tessera-vmm's own threads
  [[cdroms]]               one table per DVD-ROM drive on the AHCI controller
  path = \"PATH\"            the disc's image (ISO 9660/UDF); leave out for an empty drive
  [display]                a bochs display served over SPICE
  address = \"127.0.0.1\"   where SPICE listens
  port = 5930              plain-text port (leave out for TLS only)
  tls_port = 5931          with x509_dir = \"DIR\" (ca-cert.pem, server-cert.pem, server-key.pem)
  fps = 30                 most screen updates per second
  compression = \"auto_glz\" off, auto_glz, auto_lz, quic, glz, lz or lz4
  seccomp = true           a seccomp filter on every thread, per kind (vCPU, API, device I/O,
                           display, console, main); a call outside it ends the VMM with SIGSYS
                           after naming it on stderr (false: --no-seccomp)
  on_reboot = \"exit\"       what a guest's reboot does: exit (status 0), or restart (the VM
                           boots again in this process, the display's clients connected)
  hyperv = false           Hyper-V enlightenments for Windows guests (--hyperv)
  [tpm]                    a TPM 2.0 (CRB interface) backed by swtpm (--tpm)
  state_dir = \"DIR\"        its state, kept with the VM; tessera-vmm starts swtpm on it
  socket = \"PATH\"          instead: the control socket of a swtpm started by others
  swtpm = \"swtpm\"          the program started for state_dir

The machine is a q35 (Intel Q35 host bridge, ICH9 LPC bridge, PCI Express) with ACPI: the
tables sit in the BIOS area for a kernel and come through fw_cfg for UEFI firmware; a power
button, the PM timer, ECAM. The guest ends the VM by powering off (ACPI S5: Linux's poweroff)
or by a reset (ACPI's reset register, or the i8042 reset line: Linux's reboot=k). PUT
/vm/power-button presses the power button; an ACPI-aware guest then shuts down.
Boot milestones: the guest writes a byte to I/O port 0x80; GET /vm lists each with its time.

Exit status:
  0  the guest powered off or reset, or PUT /vm/shutdown
  1  VMM error (configuration, files, devices)
  2  command-line usage error
  3  a vCPU triple-faulted
  4  KVM error (ioctl failure, emulation failure, failed VM entry)
  5  killed through PUT /vm/kill";

/// Tessera's KVM virtual machine monitor: runs one VM in this process.
#[derive(Parser, Debug)]
#[command(name = "tessera-vmm", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// Config file (TOML, or JSON if it ends in .json); flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Kernel image: a Linux bzImage or an ELF file.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// UEFI firmware to boot instead of a kernel: OVMF built for QEMU's q35, such as
    /// Debian's /usr/share/OVMF/OVMF_CODE_4M.fd.
    #[arg(long, value_name = "PATH", conflicts_with = "kernel")]
    firmware: Option<PathBuf>,
    /// The VM's UEFI variable store, written in place by the firmware (start it as a copy of
    /// the firmware's template, OVMF_VARS_4M.fd); without it variables last one run.
    #[arg(long, value_name = "PATH")]
    firmware_vars: Option<PathBuf>,
    /// Initial ramdisk (cpio archive, compressed or not).
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STRING")]
    cmdline: Option<String>,
    /// Guest memory, e.g. 512M or 2G [default: 512M].
    #[arg(long, value_name = "SIZE")]
    memory: Option<MemorySize>,
    /// Number of vCPUs, 1 to 32 [default: 1].
    #[arg(long, value_name = "N")]
    vcpus: Option<u16>,
    /// Serial console: stdout, off, or file:PATH [default: stdout].
    #[arg(long, value_name = "WHERE")]
    serial: Option<SerialOutput>,
    /// Rotate a file:PATH console to PATH.1 at this size [default: 16M].
    #[arg(long, value_name = "SIZE")]
    serial_log_max: Option<MemorySize>,
    /// A disk: path=IMAGE[,format=qcow2|raw][,readonly=on][,queues=N][,datastore=DIR][,serial=ID]
    /// [,bus=virtio|sata] (repeat for more disks; adds to the config file's). bus=sata puts it
    /// on the AHCI controller, which guests drive without added drivers.
    #[arg(long, value_name = "DISK")]
    disk: Vec<DiskConfig>,
    /// A DVD-ROM drive on the AHCI controller with this disc image (ISO 9660/UDF, read-only),
    /// or `empty` (repeat for more drives; at most 6 SATA devices in all).
    #[arg(long, value_name = "ISO")]
    cdrom: Vec<CdromConfig>,
    /// A NIC: tap=NAME[,mac=52:54:00:xx:xx:xx][,queues=N][,mtu=N][,vhost=auto|on|off]
    /// (repeat for more; adds to the config file's): virtio-net on an existing tap interface
    /// (multi_queue and vnet_hdr for several queue pairs), or one tessera-vmm makes when it
    /// may (CAP_NET_ADMIN); the kernel's vhost-net moves the frames when /dev/vhost-net opens
    /// (vhost=auto, the default), else tessera-vmm's own threads do.
    #[arg(long, value_name = "NIC")]
    net: Vec<NetConfig>,
    /// A display served over SPICE:
    /// spice-port=N[,addr=IP][,tls-port=N,x509-dir=DIR][,fps=N][,compression=MODE][,usb=on|off]
    /// (usb: a USB tablet and keyboard on an xHCI controller, on by default).
    #[arg(long, value_name = "DISPLAY")]
    display: Option<DisplayConfig>,
    /// Serve the control API on this Unix socket.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// Run without the per-thread seccomp filters (to debug the VMM, or on a kernel without
    /// seccomp); they are on by default.
    #[arg(long)]
    no_seccomp: bool,
    /// What a guest's reboot does: exit (the VMM ends with status 0) or restart (the VM
    /// boots again in this process) [default: exit].
    #[arg(long, value_name = "WHAT")]
    on_reboot: Option<OnReboot>,
    /// Hyper-V enlightenments, for Windows guests: the guest sees a Hyper-V partition
    /// (SynIC and its timers, the reference TSC page, VP index and runtime, APIC assist,
    /// spinlock notification, TLB-flush and IPI hypercalls), all emulated by KVM.
    #[arg(long)]
    hyperv: bool,
    /// A TPM 2.0 for the guest (Windows 11 requires one), backed by swtpm:
    /// state=DIR[,swtpm=PROGRAM] starts swtpm on DIR (created 0700; keep it with the VM);
    /// socket=PATH reaches a swtpm someone else started.
    #[arg(long, value_name = "SPEC")]
    tpm: Option<TpmConfig>,
    /// Log filter for the VMM's own messages on stderr (e.g. info, debug, tessera_vmm=trace).
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "warn",
        env = "TESSERA_LOG",
        value_parser = log_filter
    )]
    log: String,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<VmConfig> {
        let mut c = match &self.config {
            Some(path) => VmConfig::from_file(path)?,
            None => VmConfig::default(),
        };
        c.kernel = self.kernel.or(c.kernel);
        c.initrd = self.initrd.or(c.initrd);
        c.firmware = self.firmware.or(c.firmware);
        c.firmware_vars = self.firmware_vars.or(c.firmware_vars);
        c.api_socket = self.api_socket.or(c.api_socket);
        if let Some(v) = self.cmdline {
            c.cmdline = v;
        }
        if let Some(v) = self.memory {
            c.memory = v;
        }
        if let Some(v) = self.vcpus {
            c.vcpus = v;
        }
        if let Some(v) = self.serial {
            c.serial = v;
        }
        if let Some(v) = self.serial_log_max {
            c.serial_log_max = v;
        }
        c.disks.extend(self.disk);
        c.cdroms.extend(self.cdrom);
        c.nets.extend(self.net);
        if let Some(d) = self.display {
            c.display = Some(d);
        }
        if self.no_seccomp {
            c.seccomp = false;
        }
        if let Some(v) = self.on_reboot {
            c.on_reboot = v;
        }
        if self.hyperv {
            c.hyperv = true;
        }
        if let Some(t) = self.tpm {
            c.tpm = Some(t);
        }
        Ok(c)
    }
}

fn run(cli: Cli, started: Instant) -> anyhow::Result<ExitReason> {
    let config = cli.into_config()?;
    let valid = config.validate()?;
    let machine = builder::build(valid, started)?;
    let server = match &config.api_socket {
        Some(path) => Some(api::spawn(
            path,
            machine.controller.clone(),
            &machine.sandbox,
        )?),
        None => None,
    };
    // Every other thread runs under its filter by now; this one's is the last.
    machine.sandbox.enter(ThreadKind::Main)?;
    let reason = machine.wait();
    if let Some(s) = server {
        s.shutdown();
    }
    Ok(reason)
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    // `Targets` rather than `EnvFilter`: the same `target=level` directives without the
    // regex engine behind EnvFilter's span filters, 250 KiB of text that every start would
    // map (BENCHMARKS.md, bench-vmm (c)). `--log` was checked when parsed.
    let filter = cli
        .log
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::WARN));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                )
                .with_filter(filter),
        )
        .init();
    // Display processes log as this process does.
    let _ = tessera_vmm::devices::display::process::LOG_FILTER.set(cli.log.clone());
    let code = match run(cli, started) {
        Ok(reason) => {
            builder::flush_console();
            if reason.status() != status::GUEST_SHUTDOWN {
                eprintln!("tessera-vmm: {reason}");
            } else {
                tracing::info!(%reason, "VM stopped");
            }
            reason.status()
        }
        Err(e) => {
            builder::flush_console();
            eprintln!("tessera-vmm: error: {e:#}");
            status::VMM_ERROR
        }
    };
    // Exit without unwinding the vCPU threads: they are stopped, and guest memory goes with
    // the process.
    std::process::exit(code)
}

/// Checks a `--log` filter: a default level and `target=level` directives, comma-separated
/// (tracing-subscriber's `Targets`), so that a typo is an error rather than silence.
fn log_filter(s: &str) -> Result<String, tracing_subscriber::filter::ParseError> {
    s.parse::<Targets>().map(|_| s.to_owned())
}
