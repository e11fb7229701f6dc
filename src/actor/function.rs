//! Closure actors, for small transforms that need no state of their own.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Actor, ActorContext};
use crate::error::Result;
use crate::message::Message;

type Handler = dyn Fn(&str, Message) -> Result<Vec<(String, Message)>> + Send + Sync;

/// An actor made from a closure that maps one input to any number of outputs.
///
/// The closure gets the in-port name and the message, and returns `(out-port, message)`
/// pairs to emit in order.
///
/// ```
/// use reflow_network::actor::FnActor;
/// use reflow_network::Message;
///
/// // One in-port, one out-port, one output per input.
/// let double = FnActor::map("in", "out", |m| Message::Integer(m.as_integer().unwrap_or(0) * 2));
///
/// // Any ports, any number of outputs.
/// let split = FnActor::new(["in"], ["even", "odd"], |_port, m| {
///     let port = if m.as_integer().unwrap_or(0) % 2 == 0 { "even" } else { "odd" };
///     Ok(vec![(port.to_string(), m)])
/// });
/// # let _ = (double, split);
/// ```
#[derive(Clone)]
pub struct FnActor {
    inports: Vec<String>,
    outports: Vec<String>,
    description: String,
    handler: Arc<Handler>,
}

impl FnActor {
    /// An actor with the given ports whose closure returns the outputs of each input.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # fn main() -> Result<()> {
    /// // Splits even and odd integers onto two ports.
    /// let split = FnActor::new(["in"], ["even", "odd"], |_port, msg| {
    ///     let port = if msg.as_integer().unwrap_or(0) % 2 == 0 { "even" } else { "odd" };
    ///     Ok(vec![(port.to_string(), msg)])
    /// });
    /// assert_eq!(split.outports(), ["even", "odd"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new<I, O, F>(inports: I, outports: O, handler: F) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
        O: IntoIterator,
        O::Item: Into<String>,
        F: Fn(&str, Message) -> Result<Vec<(String, Message)>> + Send + Sync + 'static,
    {
        FnActor {
            inports: inports.into_iter().map(Into::into).collect(),
            outports: outports.into_iter().map(Into::into).collect(),
            description: String::new(),
            handler: Arc::new(handler),
        }
    }

    /// An actor with one in-port and one out-port that emits `f(message)` for each input.
    ///
    /// # Examples
    ///
    /// ```
    /// # use reflow_network::prelude::*;
    /// # fn main() -> Result<()> {
    /// let shout = FnActor::map("in", "out", |m| Message::from(m.as_str().unwrap_or("").to_uppercase()));
    /// assert_eq!(shout.inports(), ["in"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn map<F>(inport: &str, outport: &str, f: F) -> Self
    where
        F: Fn(Message) -> Message + Send + Sync + 'static,
    {
        let out = outport.to_string();
        FnActor::new([inport], [outport], move |_, m| {
            Ok(vec![(out.clone(), f(m))])
        })
    }

    /// Sets the description discovery shows.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

#[async_trait]
impl Actor for FnActor {
    fn inports(&self) -> Vec<String> {
        self.inports.clone()
    }

    fn outports(&self) -> Vec<String> {
        self.outports.clone()
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()> {
        for (out, m) in (self.handler)(port, message)? {
            ctx.emit(&out, m).await?;
        }
        Ok(())
    }
}
