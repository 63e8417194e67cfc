//! One node at a time: the walk a rolling restart, a serial control-plane join or a
//! certificate renewal takes. The first failure (or Ctrl-C) stops the walk, so a problem on
//! one node never spreads to the next; each node not reached is told why.

use crate::interrupt::Interrupt;

/// Runs `step` on each item in order, one at a time. After a failure or Ctrl-C, each item
/// left gets `not_reached(stopped_at, item)` instead of running (the node that failed, or
/// `None` for Ctrl-C). Results come back in order, one per item.
pub async fn one_at_a_time<I, T>(
    items: Vec<(String, I)>,
    interrupt: &Interrupt,
    step: impl AsyncFn(&str, &I) -> anyhow::Result<T>,
    not_reached: impl Fn(Option<&str>, &I) -> anyhow::Result<T>,
) -> Vec<(String, anyhow::Result<T>)> {
    let mut results = Vec::with_capacity(items.len());
    let mut stopped_at: Option<Option<String>> = None;
    for (name, item) in &items {
        if stopped_at.is_none() && interrupt.is_raised() {
            stopped_at = Some(None);
        }
        if let Some(at) = &stopped_at {
            results.push((name.clone(), not_reached(at.as_deref(), item)));
            continue;
        }
        let r = step(name, item).await;
        if r.is_err() {
            stopped_at = Some(Some(name.clone()));
        }
        results.push((name.clone(), r));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<(String, usize)> {
        (1..=n).map(|i| (format!("cp{i}"), i)).collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_walk_stops_at_the_first_failure_and_names_it_to_the_rest() {
        let ran = std::cell::RefCell::new(Vec::new());
        let results = one_at_a_time(
            names(4),
            &Interrupt::default(),
            async |name, i| {
                ran.borrow_mut().push(name.to_owned());
                if *i == 2 {
                    anyhow::bail!("port taken")
                }
                Ok(*i)
            },
            |at, _| Err(anyhow::anyhow!("not reached: stopped at {at:?}")),
        )
        .await;
        assert_eq!(*ran.borrow(), ["cp1", "cp2"]);
        let text: Vec<String> = results
            .iter()
            .map(|(n, r)| {
                format!(
                    "{n}: {}",
                    r.as_ref().map_or_else(|e| e.to_string(), |v| v.to_string())
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                "cp1: 1",
                "cp2: port taken",
                "cp3: not reached: stopped at Some(\"cp2\")",
                "cp4: not reached: stopped at Some(\"cp2\")"
            ]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ctrl_c_lets_the_node_in_flight_finish_and_starts_no_other() {
        let interrupt = Interrupt::default();
        let results = one_at_a_time(
            names(3),
            &interrupt,
            async |_, i| {
                if *i == 1 {
                    interrupt.raise();
                }
                Ok(*i)
            },
            |at, _| Err(anyhow::anyhow!("not reached ({at:?})")),
        )
        .await;
        assert!(results[0].1.is_ok(), "the node in flight finishes");
        for (_, r) in &results[1..] {
            assert_eq!(r.as_ref().unwrap_err().to_string(), "not reached (None)");
        }
    }
}
