//! A slow receiver: network A streams as fast as it can to an actor in B that takes a
//! millisecond over each message, so B's backlog, and the time each message waits to be
//! handled, grow for the whole round. None of that is a loss; the figure is what A sent
//! twice regardless, against the messages it sent.

use std::time::Duration;

use async_trait::async_trait;

use super::support::{CountTo, Pair, ROUND_LIMIT, too_slow};
use super::{BenchOptions, BenchReport, Compared};
use crate::actor::{Actor, ActorContext};
use crate::error::Result;
use crate::message::Message;

/// How long the receiver's actor takes over each message.
const HANDLING: Duration = Duration::from_millis(1);

/// Sleeps over each message, then counts it.
#[derive(Clone)]
struct Slow(CountTo);

#[async_trait]
impl Actor for Slow {
    fn inports(&self) -> Vec<String> {
        vec!["in".into()]
    }
    fn outports(&self) -> Vec<String> {
        Vec::new()
    }
    async fn handle(&mut self, ctx: &mut ActorContext, port: &str, message: Message) -> Result<()> {
        tokio::time::sleep(HANDLING).await;
        self.0.handle(ctx, port, message).await
    }
}

/// Streams `options.slow_messages` to a slow actor and reports the messages that reached
/// it twice and the envelopes sent again, each against the messages sent (target: under
/// 1 %).
pub(super) async fn measure(
    url: &str,
    options: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let n = options.slow_messages;
    let counter = CountTo::new(n);
    let done = counter.done();
    let pair = Pair::over_nats(url, Slow(counter.clone())).await?;
    let inlet = pair.a.get_local_network().read().inlet(&pair.alias, "in")?;
    let finished = done.notified();
    tokio::pin!(finished);
    finished.as_mut().enable();
    let feed = async {
        for i in 0..n {
            inlet.send(Message::Integer(i as i64)).await?;
        }
        Ok::<(), crate::Error>(())
    };
    let limit = ROUND_LIMIT + HANDLING * 2 * n as u32;
    let all = tokio::time::timeout(limit, async {
        feed.await?;
        finished.await;
        Ok::<(), crate::Error>(())
    })
    .await
    .map_err(|_| too_slow("slow receiver"))?;
    all?;
    let (sent, received) = (pair.a.stats(), pair.b.stats());
    pair.close().await?;
    report
        .add(
            "slow receiver",
            None,
            "repeats",
            received.duplicates_in as f64,
        )
        .against(Compared::MessagesSent, n as f64, Some((0.01, false)))
        .note(format!(
            "messages B's actor (1 ms each) was sent twice while A streamed {n} as fast as \
             it could; A sent {} envelopes again",
            sent.resent
        ));
    report
        .add(
            "slow receiver",
            None,
            "resent_envelopes",
            sent.resent as f64,
        )
        .against(Compared::MessagesSent, n as f64, Some((0.01, false)));
    Ok(())
}
