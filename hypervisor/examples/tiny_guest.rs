//! Writes one of the tiny test guests to a file, for trying them by hand:
//! `cargo run -p tessera-vmm --example tiny_guest -- KIND OUT`
//! KIND: hello, irq, pci, poke, triple, idle, pio:COUNT, and for QEMU -bios:
//! hello-bios, idle-bios, pio-bios:COUNT
use tessera_vmm::tiny_guest as tg;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, out] = args.as_slice() else {
        anyhow::bail!(
            "usage: tiny_guest KIND OUT  (KIND: hello, irq, pci, poke, triple, idle, pio:COUNT, and for QEMU -bios:
//! hello-bios, idle-bios, pio-bios:COUNT)"
        );
    };
    let img = match kind.as_str() {
        "hello" => tg::hello(b"Hello from a tiny guest\n"),
        "irq" => tg::serial_irq(),
        "pci" => tg::pci_probe(),
        "poke" => tg::poke_unknown(100),
        "triple" => tg::triple_fault(),
        "idle" => tg::milestones_then_idle(&[0x10, 0x20]),
        "hello-bios" => tg::hello_bios(b"Hello from a tiny guest\n"),
        "idle-bios" => tg::idle_bios(),
        k => match k.strip_prefix("pio:") {
            Some(n) => tg::pio_loop(n.parse()?),
            None => match k.strip_prefix("pio-bios:") {
                Some(n) => tg::pio_loop_bios(n.parse()?),
                None => anyhow::bail!("unknown guest kind {k}"),
            },
        },
    };
    std::fs::write(out, img)?;
    Ok(())
}
