//! ffi/tandem.h is generated from the Rust sources by cbindgen; this test fails when the
//! committed header and the Rust exports disagree. `TANDEM_BLESS=1 cargo test --test header`
//! (or `./build.sh header`) rewrites it.

use std::path::PathBuf;

#[test]
fn header_matches_rust_exports() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("../../ffi/tandem.h");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not parse the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("utf-8 header");
    if std::env::var_os("TANDEM_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("write ffi/tandem.h");
        return;
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "ffi/tandem.h is stale: the Rust exports changed. Run ./build.sh header and commit it.\n\
         --- generated ---\n{generated}"
    );
}
