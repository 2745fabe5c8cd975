//! The router as the runtime's [`Outbound`]: where the signals a running guest sends go,
//! and what a turn's commit releases or its failure gives back.

use std::sync::Arc;
use std::time::Duration;

use super::Router;
use crate::runtime::{Answer, Outbound, Output};
use crate::signal::{Body, Failure, Json, Signal, code};

impl Outbound for Router {
    fn send(&self, signal: &Signal, owner: &Arc<str>) -> Result<(), Failure> {
        self.reserve_send(signal, owner)
    }

    fn request(&self, signal: Signal, timeout: Duration) -> Answer {
        let me = self.me.upgrade();
        Box::pin(async move {
            match me {
                Some(router) => router.request(signal, timeout).await,
                None => Err(Failure::new(code::OVERLOADED, "the host is shutting down")),
            }
        })
    }

    fn claim(
        &self,
        id: &str,
        answerer: &str,
        outcome: Result<Json, Failure>,
    ) -> Result<Signal, Failure> {
        let open = self.claim_answer(id, answerer)?;
        let answer = open.answer(outcome, self.clock());
        self.answers.hold(open);
        Ok(answer)
    }

    fn subscribers(&self, signal: &Signal) -> u32 {
        Router::subscribers(self, signal)
    }

    fn is_online(&self, address: &str) -> bool {
        Router::is_online(self, address)
    }

    fn release(&self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send(mut signal) => {
                    self.stamp_reply_via(&mut signal);
                    self.route(signal)
                }
                Output::Broadcast(signal) | Output::Push(signal) => {
                    // A refusal at the source is counted (`switchboard_refused_total`).
                    let _ = self.offer_now(signal);
                }
                Output::Answer(signal) => {
                    if let Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. } =
                        &signal.body
                    {
                        self.answers.settle(reply_to);
                    }
                    self.route_answer(signal);
                }
            }
        }
    }

    fn discard(&self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send(signal) => self.callbacks.close(signal.id()),
                Output::Answer(signal) => {
                    if let Body::Reply { reply_to, .. } | Body::ErrorReply { reply_to, .. } =
                        &signal.body
                    {
                        self.answers.reopen(reply_to);
                    }
                }
                Output::Broadcast(_) | Output::Push(_) => {}
            }
        }
    }
}
