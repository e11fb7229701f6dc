//! Feeds arbitrary bytes to the direct link's frame decoder, as a hostile peer could:
//! it must never panic, hang, or allocate past the frame limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reflow_network::transport::direct::frame::decode_frames_for_fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = decode_frames_for_fuzzing(data);
});
