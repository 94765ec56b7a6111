//! Writes a tiny guest image: `cargo run --example tiny_guest -- hello OUT` or `pio N OUT`.
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (img, out) = match args.as_slice() {
        [kind, out] if kind == "hello" => (tessera_vmm::tiny_guest::hello(b"Hello from a tiny guest\n"), out),
        [kind, n, out] if kind == "pio" => (tessera_vmm::tiny_guest::pio_loop(n.parse()?), out),
        _ => anyhow::bail!("usage: tiny_guest hello OUT | tiny_guest pio COUNT OUT"),
    };
    std::fs::write(out, img)?;
    Ok(())
}
