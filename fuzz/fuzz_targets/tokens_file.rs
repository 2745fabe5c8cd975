#![no_main]
//! See `switchboard::fuzzing::tokens_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::tokens_file(data));
