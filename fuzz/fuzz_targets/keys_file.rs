#![no_main]
//! See `switchboard::fuzzing::keys_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::keys_file(data));
