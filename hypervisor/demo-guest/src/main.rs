//! tessera-demo-guest: writes the demo desktop guest's image for tessera-vmm.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

const AFTER_HELP: &str = "\
Examples:
  Write the image and boot it with a display (no disk, 64 MiB is plenty):
    tessera-demo-guest --output demo.elf
    tessera-vmm --kernel demo.elf --memory 64M --cmdline 'name=demo-01' \\
                --display spice-port=5930 --api-socket vm.sock

Its command line: name=NAME (the title bar; up to 40 characters), mode=WIDTHxHEIGHT (default
1024x768, up to 2560x1600). It echoes typed characters, 'click X Y' lines and
'[ctrl-alt-del]' (for that chord) to the serial console.";

/// Writes Tessera's demo desktop guest: an OS-less ELF image that paints a desktop (title bar
/// with the desktop's name and a clock, a notes window showing typed text, the pointer) on the
/// bochs display. It runs at full speed where KVM is software-assisted.
#[derive(Parser, Debug)]
#[command(name = "tessera-demo-guest", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// Where to write the image; standard output when left out.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.output {
        Some(path) => std::fs::write(&path, tessera_demo_guest::ELF)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout()
            .write_all(tessera_demo_guest::ELF)
            .context("cannot write the image to standard output")?,
    }
    Ok(())
}
