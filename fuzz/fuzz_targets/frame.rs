#![no_main]
//! See `switchboard::fuzzing::frame`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::frame(data));
