//! [`Gated`]: a future inside a connection's task that is polled only when its own waker fired.
//!
//! A connection's task holds several futures: the two directions, and the branches that end it
//! (idle timeout, backend marked down, drain). With `select!`/`join!` every wake-up polls all
//! of them, so a 300-byte watch event also polled the other direction, two `watch` receivers
//! (a lock each) and the idle timer: measured under callgrind, those polls cost more user time
//! than forwarding the event. Each `Gated` future gets a waker of its own that notes the wake
//! and then wakes the task, and a poll of the task polls only the futures with news, as
//! `FuturesUnordered` does.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// What a gated future's waker shares with it.
#[derive(Debug)]
struct Flag {
    /// Woken since the last poll (true at first, so the first poll registers every waker).
    woken: AtomicBool,
    /// The task's own waker, as of the last poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Ok(task) = self.task.lock()
            && let Some(task) = task.as_ref()
        {
            task.wake_by_ref();
        }
    }
}

/// A future polled only after its own waker fired (see the module docs).
pub(super) struct Gated<'a, F> {
    flag: Arc<Flag>,
    waker: Waker,
    /// The task waker last handed to `flag`: compared here, so a poll takes the lock only
    /// when the task's waker changed (for a tokio task: never after the first poll).
    task: Option<Waker>,
    /// Pinned where its owner keeps it (inside the connection's task, not a box of its own).
    future: Pin<&'a mut F>,
}

impl<'a, F: Future> Gated<'a, F> {
    pub(super) fn new(future: Pin<&'a mut F>) -> Gated<'a, F> {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Gated {
            waker: Waker::from(Arc::clone(&flag)),
            flag,
            task: None,
            future,
        }
    }

    /// Polls the future if it was woken since the last poll; `Pending` otherwise. Wakes that
    /// arrive while it runs are kept for the next poll (the flag is cleared before, not after).
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        if !self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()))
            && let Ok(mut task) = self.flag.task.lock()
        {
            *task = Some(cx.waker().clone());
            self.task = Some(cx.waker().clone());
        }
        self.future
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, and wakes whoever polled it last on `kick`.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Probe {
        fn kick(&self) {
            if let Some(w) = self.waker.lock().unwrap().take() {
                w.wake();
            }
        }
    }

    fn probe(p: &Arc<Probe>) -> impl Future<Output = ()> + use<> {
        let p = Arc::clone(p);
        std::future::poll_fn(move |cx| {
            p.polls.fetch_add(1, Ordering::Relaxed);
            if p.ready.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            *p.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Task(AtomicUsize);
    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_gated_future_is_polled_only_after_its_own_waker_fired() {
        let task = Arc::new(Task::default());
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);
        let (a, b) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
        let (fa, fb) = (std::pin::pin!(probe(&a)), std::pin::pin!(probe(&b)));
        let (mut ga, mut gb) = (Gated::new(fa), Gated::new(fb));
        // The first poll reaches both, so both can register.
        assert!(ga.poll(&mut cx).is_pending() && gb.poll(&mut cx).is_pending());
        assert_eq!(
            (
                a.polls.load(Ordering::Relaxed),
                b.polls.load(Ordering::Relaxed)
            ),
            (1, 1)
        );
        // Only `a` has news: the task wakes, and a poll reaches `a` alone.
        a.kick();
        assert_eq!(task.0.load(Ordering::Relaxed), 1, "the task was woken");
        assert!(ga.poll(&mut cx).is_pending() && gb.poll(&mut cx).is_pending());
        assert_eq!(
            (
                a.polls.load(Ordering::Relaxed),
                b.polls.load(Ordering::Relaxed)
            ),
            (2, 1)
        );
        // `b` becomes ready and says so: its next poll completes.
        b.ready.store(true, Ordering::Relaxed);
        b.kick();
        assert!(gb.poll(&mut cx).is_ready());
    }

    #[test]
    fn a_wake_during_the_poll_is_kept_for_the_next_one() {
        let task = Arc::new(Task::default());
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        // Wakes itself while being polled, as tokio's budget does when it runs out.
        let f = std::pin::pin!(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::Relaxed);
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        let mut g = Gated::new(f);
        assert!(g.poll(&mut cx).is_pending());
        assert!(g.poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        assert_eq!(
            task.0.load(Ordering::Relaxed),
            2,
            "each wake reached the task"
        );
    }
}
