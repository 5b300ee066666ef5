//! Bakes libtorch's lib folder into the rpath of every binary, test, example and bench, so that plain
//! `cargo run` / `cargo test` find libtorch without LD_LIBRARY_PATH (which cargo ignores from `[env]`).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
