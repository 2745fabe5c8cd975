#![no_main]
//! See `switchboard::fuzzing::EmbeddedHost`. The guests are read from
//! `$SWITCHBOARD_GUESTS_DIR`, else `target/wasm32-wasip2/release` (`fuzz/run.sh` builds
//! them first).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use switchboard::fuzzing::EmbeddedHost;

fn host() -> &'static EmbeddedHost {
    static HOST: OnceLock<EmbeddedHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let dir = std::env::var_os("SWITCHBOARD_GUESTS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
            });
        EmbeddedHost::new(&dir)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| host().run(data));
