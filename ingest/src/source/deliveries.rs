//! Waiting for a Kafka producer's delivery reports without polling for them.
//!
//! The Kafka client's own `flush` polls its event queue in slices of up to 100 ms and
//! returns only when a slice is over, however early the last acknowledgement came, and
//! spends the last millisecond of each slice asking the queue again and again. The alert
//! thread and the dead-letter sink wait after every batch that produced something, so
//! waiting that way would hold them for at least 100 ms a batch.
//!
//! Here the producer's own polling thread (a `ThreadedProducer`) serves the reports. Its
//! context counts each one in a [`DeliveryReports`], and the thread that sent the messages
//! sleeps on that count until it reaches the number it sent: it wakes at the last
//! acknowledgement.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, ProducerContext};

/// Delivery reports received so far, acknowledged or failed, and a condition variable
/// signalled at each. A producer context calls [`add`](Self::add) from its `delivery`
/// callback, after it has recorded a failure, so a waiter that wakes sees the failure.
#[derive(Debug, Default)]
pub struct DeliveryReports {
    count: Mutex<u64>,
    changed: Condvar,
}

impl DeliveryReports {
    /// Counts one report and wakes the waiters.
    pub fn add(&self) {
        let mut n = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *n += 1;
        self.changed.notify_all();
    }

    /// Reports received so far.
    pub fn count(&self) -> u64 {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `target` reports have come in or `deadline` has passed, and returns the
    /// count then.
    pub fn wait_for(&self, target: u64, deadline: Instant) -> u64 {
        let mut n = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *n < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = self
                .changed
                .wait_timeout(n, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *n
    }

    /// Waits for the next report after those already in, or until `deadline`: how a
    /// sender whose local queue is full waits for the acknowledgement that makes room.
    pub fn wait_for_next(&self, deadline: Instant) {
        let target = self.count() + 1;
        self.wait_for(target, deadline);
    }
}

/// Hands the producer's queued messages to the brokers now rather than after `linger.ms`,
/// without waiting for them. While messages are unacknowledged the client reports a
/// timeout, which here only means they are on their way; any other error is returned.
pub fn send_now<C, P>(producer: &P) -> Result<(), KafkaError>
where
    C: ClientContext + ProducerContext,
    P: Producer<C>,
{
    match producer.flush(Duration::ZERO) {
        Ok(()) | Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_wakes_at_the_report_it_waits_for() {
        let reports = Arc::new(DeliveryReports::default());
        let serving = {
            let reports = reports.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    std::thread::sleep(Duration::from_millis(5));
                    reports.add();
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        assert_eq!(reports.wait_for(3, deadline), 3);
        assert!(Instant::now() < deadline);
        serving.join().unwrap();
        assert_eq!(reports.count(), 3);
    }

    #[test]
    fn a_sender_waits_for_the_next_report_only() {
        let reports = Arc::new(DeliveryReports::default());
        reports.add();
        reports.add();
        let serving = {
            let reports = reports.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                reports.add();
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        reports.wait_for_next(deadline);
        assert!(Instant::now() < deadline);
        assert_eq!(reports.count(), 3);
        serving.join().unwrap();
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline() {
        let reports = DeliveryReports::default();
        reports.add();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        assert_eq!(reports.wait_for(2, deadline), 1);
        assert!(Instant::now() >= deadline);
        // Reached already: no wait at all, even past the deadline.
        assert_eq!(reports.wait_for(1, started), 1);
    }
}
