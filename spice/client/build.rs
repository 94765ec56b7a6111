//! Links libspice-client-glib (Debian: libspice-client-glib-2.0-dev). The few functions used
//! are declared by hand in src/ffi.rs; the GObject side comes from the glib crate.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("0.35")
        .probe("spice-client-glib-2.0")
    {
        panic!(
            "libspice-client-glib 0.35 or later is needed for tessera's SPICE client: \
             apt-get install -y --no-install-recommends libspice-client-glib-2.0-dev pkg-config \
             (scripts/test.sh installs it). pkg-config said: {e}"
        );
    }
}
