//! The floor every in-process figure is read against: echo's `handle-message` called with
//! wasmtime's component API on one warm instance, in an engine with the host's own settings
//! (`switchboard::runtime::engine_config`: pooling allocator, epoch interruption, async calls
//! on a fiber), without the router, mailboxes, limits or JSON checks. Used by
//! `examples/signals.rs raw` and the criterion benchmark `roundtrip`.

use switchboard::HostConfig;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "handler",
        exports: { default: async },
    });
}

use bindings::switchboard::signal::types::{Answer, Envelope, Message};
use bindings::{Handler, HandlerPre};

/// A warm instance of echo and the message it is called with.
pub struct RawEcho {
    store: Store<()>,
    handler: Handler,
    message: Message,
}

impl RawEcho {
    /// Compiles `echo` (the component's bytes) with `config`'s engine settings and starts
    /// one instance.
    pub async fn new(config: &HostConfig, echo: &[u8]) -> Self {
        let engine_config = switchboard::runtime::engine_config(config, true);
        let engine = Engine::new(&engine_config).expect("an engine");
        let component = Component::new(&engine, echo).expect("compiling echo");
        // Echo answers from its payload alone: every import (WASI, the host interface) traps.
        let mut linker = Linker::<()>::new(&engine);
        linker
            .define_unknown_imports_as_traps(&component)
            .expect("trapping imports");
        let pre = HandlerPre::new(linker.instantiate_pre(&component).expect("linking echo"))
            .expect("the handler world");
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(u64::MAX / 2);
        let handler = pre
            .instantiate_async(&mut store)
            .await
            .expect("an instance");
        let message = Message {
            envelope: Envelope {
                id: "0193a6c0-0000-7000-8000-000000000000".into(),
                timestamp: 1_700_000_000_000,
                from: "host".into(),
                headers: Vec::new(),
                depth: 0,
                deadline: Some(1_700_000_010_000),
            },
            message_type: "Ping".into(),
            to: "echo".into(),
            return_address: None,
            payload: r#"{"n":1}"#.into(),
        };
        Self {
            store,
            handler,
            message,
        }
    }

    /// One call of `handle-message`; panics unless echo answers with the payload.
    pub async fn call(&mut self) {
        let answer = self
            .handler
            .call_handle_message(&mut self.store, &self.message.clone())
            .await
            .expect("a call");
        assert!(matches!(answer, Answer::Reply(ref p) if p == r#"{"n":1}"#));
    }
}
