//! The check an upload gets before it is compiled: any bytes are read or refused, never a
//! panic, and a component passes only with every export of the `handler` world.

use crate::runtime::check::{HANDLER_EXPORTS, check, surface};

/// Checks `data` as an uploaded component.
pub fn component_check(data: &[u8]) {
    let read = surface(data);
    let passed = check(data).is_ok();
    if passed {
        let surface = read.expect("a component that passes the check is read");
        for name in HANDLER_EXPORTS {
            assert!(
                surface.exported_functions.iter().any(|e| e == name),
                "passed without exporting `{name}`"
            );
        }
    }
}
