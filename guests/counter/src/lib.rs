//! `counter`: an agent handler. Every agent (`agent:counter/<id>`) keeps its own count in
//! keyed state, so it survives hot swaps, rollbacks, restarts and crashes; and can ask `echo`
//! something without waiting: the answer is kept as that agent's `last_reply`.
//!
//! Its code is in `handler.rs`, shared with `counter-next` (the same handler built as
//! version 2), so tests can hot-swap the counter for a build that answers differently.
//!
//! - `Increment {by}`, `Get {}`: change and read the count; `AskEcho {text}`: see above.
//! - `Version {}`: which build this is (1 here, 2 in `counter-next`).
//! - `Notify {by, user}`: increments and pushes `Counted` to `user`; `Explode {by, user}`
//!   does the same and then panics, so neither happens.
//! - `Fill {bytes}`: increments and stores a string of `bytes` bytes at key `blob`, in one
//!   turn (for state quotas).
//! - `Bump {by, barrier}`: reads the count, waits at a barrier of the `deferred` service,
//!   then writes the count plus `by` (two turns that read one count).
//! - `Step {i, barrier}`: (after waiting at a barrier, if given) appends `i` to the list
//!   `steps` and answers its previous last element; `Steps {}` answers the list.

/// What `Version {}` answers: which build of the counter this is.
const VERSION: u32 = 1;

include!("handler.rs");
