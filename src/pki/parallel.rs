//! Independent pieces of the PKI made side by side. Generating an RSA key is the slow part
//! (about 0.1 s of one core each, 17 keys for three control planes), and no key waits for
//! another: the CAs and the service-account key need nothing, every leaf needs only its CA.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{PkiError, PkiReport};

/// Runs `work` on every item, spread over the machine's cores. The report entries and the
/// results come back in the items' order, exactly as a loop over them would give them, and the
/// first error in that order is the one returned. Items after a failing one may still have been
/// made (and saved): each is complete on its own, and a re-run reuses it.
pub fn each<I, O>(
    items: &[I],
    report: &mut PkiReport,
    work: impl Fn(&I, &mut PkiReport) -> Result<O, PkiError> + Sync,
) -> Result<Vec<O>, PkiError>
where
    I: Sync,
    O: Send,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(items.len());
    let next = AtomicUsize::new(0);
    // Each worker takes the next item until none is left, and keeps what it made with the
    // item's index.
    let worker = || {
        let mut made = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return made;
            };
            made.push((i, reported(|r| work(item, r))));
        }
    };
    let mut made = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(worker)).collect();
        let mut all = worker();
        for helper in helpers {
            all.extend(join(helper));
        }
        all
    });
    made.sort_by_key(|(i, _)| *i);
    made.into_iter()
        .map(|(_, piece)| report.absorb(piece))
        .collect()
}

/// Runs `work` with a report of its own, to be merged later in a fixed order.
pub fn reported<T>(
    work: impl FnOnce(&mut PkiReport) -> Result<T, PkiError>,
) -> (Result<T, PkiError>, PkiReport) {
    let mut own = PkiReport::default();
    let result = work(&mut own);
    (result, own)
}

/// The value of a scoped thread; its panic, if it panicked, goes on in this thread.
pub fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pki::Outcome;

    #[test]
    fn results_and_report_keep_the_items_order() {
        let items: Vec<u32> = (0..40).collect();
        let mut report = PkiReport::default();
        let out = each(&items, &mut report, |i, r| {
            // Uneven work, so workers finish out of order.
            std::thread::sleep(std::time::Duration::from_micros(u64::from(40 - i) * 50));
            r.push(&format!("item{i}"), Outcome::Created);
            Ok(i * 2)
        })
        .unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let names: Vec<String> = report.entries.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names,
            items.iter().map(|i| format!("item{i}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_first_error_in_item_order_wins() {
        let items: Vec<u32> = (0..10).collect();
        let mut report = PkiReport::default();
        let err = each(&items, &mut report, |i, _| {
            if *i == 3 || *i == 7 {
                Err(PkiError::ServiceSubnetTooSmall {
                    subnet: format!("10.0.0.{i}/32").parse().unwrap(),
                })
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("10.0.0.3/32"), "{err}");
    }
}
