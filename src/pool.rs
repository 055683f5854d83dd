//! The one bounded worker pool every stage uses: items go to `jobs`
//! threads through a bounded queue, and their results come back to the
//! calling thread through another, so memory stays bounded by the queue
//! depths whatever the number of items.
//!
//! Only the stages (transfer, verify, rollback, restore, scan) drive it;
//! the calling thread keeps whatever is not `Sync` (the ledger writer, a
//! report being built) and the workers do the reading and hashing.

/// How many items wait for a worker.
const QUEUE_IN: usize = 256;
/// How many results wait for the calling thread: one ledger batch's worth,
/// so that workers keep going while a batch is recorded.
pub const QUEUE_OUT: usize = 4096;

/// Maps `items` through `work` on `jobs` threads and feeds the results to
/// `sink` on the calling thread, with bounded queues both ways. If `sink`
/// returns an error, the pipeline winds down and that error is returned.
pub fn parallel_map<T, R, E>(
    jobs: usize,
    items: impl Iterator<Item = T> + Send,
    work: impl Fn(T) -> R + Sync,
    mut sink: impl FnMut(R) -> Result<(), E>,
) -> Result<(), E>
where
    T: Send,
    R: Send,
{
    let jobs = jobs.max(1);
    // Deep enough that neither side waits on the other for small items
    // (a worker finding its queue empty spins and yields before it sleeps).
    let (tx_in, rx_in) = crossbeam_channel::bounded::<T>(QUEUE_IN);
    let (tx_out, rx_out) = crossbeam_channel::bounded::<R>(QUEUE_OUT);
    std::thread::scope(|s| {
        s.spawn(move || {
            for item in items {
                if tx_in.send(item).is_err() {
                    break;
                }
            }
        });
        for _ in 0..jobs {
            let (rx, tx, work) = (rx_in.clone(), tx_out.clone(), &work);
            s.spawn(move || {
                for item in rx {
                    if tx.send(work(item)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((tx_out, rx_in));
        let result = rx_out.iter().try_for_each(&mut sink);
        // Dropping the receiver makes blocked workers (and then the walker)
        // stop, so the scope can join them.
        drop(rx_out);
        result
    })
}

/// [`parallel_map`] over items a callback-style source pushes (a
/// manifest's streamed entries, say) from a thread of its own, through a
/// bounded queue; returns what the source returned, once it is done.
pub fn parallel_map_pushed<T, R, P>(
    jobs: usize,
    produce: impl FnOnce(&dyn Fn(T) -> bool) -> P + Send,
    work: impl Fn(T) -> R + Sync,
    mut sink: impl FnMut(R),
) -> P
where
    T: Send,
    R: Send,
    P: Send,
{
    let (tx, rx) = crossbeam_channel::bounded::<T>(QUEUE_IN);
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(&|item| tx.send(item).is_ok()));
        let _ = parallel_map(jobs, rx.into_iter(), work, |r| {
            sink(r);
            Ok::<(), ()>(())
        });
        join(producer)
    })
}

/// A scoped thread's result; a panic in it goes on in the caller.
pub fn join<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_delivers_everything_and_stops_on_sink_error() {
        let mut got = Vec::new();
        parallel_map(
            3,
            0..1000u32,
            |x| x * 2,
            |r| {
                got.push(r);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        got.sort();
        assert_eq!(got, (0..1000).map(|x| x * 2).collect::<Vec<_>>());

        let mut n = 0;
        let r = parallel_map(
            2,
            0..1_000_000u32,
            |x| x,
            |_| {
                n += 1;
                if n == 10 { Err("stop") } else { Ok(()) }
            },
        );
        assert_eq!(r, Err("stop"));
        assert_eq!(n, 10);
    }
}
