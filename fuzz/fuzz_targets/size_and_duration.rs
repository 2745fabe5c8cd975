#![no_main]
//! See `switchboard::fuzzing::size_and_duration`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::size_and_duration(data));
