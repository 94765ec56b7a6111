//! Links libspice-server. The bindings themselves are checked in (src/bindings.rs, made by
//! generate.sh), so building needs the library, not libclang.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("0.14.0")
        .probe("spice-server")
    {
        panic!(
            "libspice-server 0.14 or later is needed to link tessera-vmm's SPICE server: \
             apt-get install -y --no-install-recommends libspice-server-dev pkg-config \
             (scripts/test.sh and scripts/all-in-one.sh install it). pkg-config said: {e}"
        );
    }
}
