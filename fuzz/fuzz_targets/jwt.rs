#![no_main]
//! See `switchboard::fuzzing::jwt`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::jwt(data));
