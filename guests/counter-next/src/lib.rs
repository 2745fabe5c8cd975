//! `counter-next`: the `counter` agent built again as version 2: the same code and state,
//! but `Version {}` answers 2, so a test can tell which build is live across a hot swap and
//! a rollback.

/// What `Version {}` answers: which build of the counter this is.
const VERSION: u32 = 2;

include!("../../counter/src/handler.rs");
