#![no_main]
//! See `switchboard::fuzzing::component_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::component_check(data));
