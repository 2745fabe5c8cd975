#![no_main]
//! See `switchboard::fuzzing::wire`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::wire(data));
