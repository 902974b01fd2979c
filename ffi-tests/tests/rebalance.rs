//! Consumer-group rebalances under load, eager (`range`) and incremental
//! (`cooperative-sticky`), against the mock cluster.
//!
//! Three members join one by one and one leaves, over a topic of 8 partitions, while a
//! producer keeps writing to every partition. Each member is a task looping on
//! `Consumer::next_event()`: on a revocation it records the revoked partitions with a
//! sequence number from a shared counter, commits the offsets it processed for them, then
//! completes the rebalance; on a message it records (partition, offset, sequence number).
//! Before each membership change the members that stay stop asking for events right
//! after a message until librdkafka has queued the rebalance (statistics'
//! `cgrp.rebalance_cnt`), so each revocation meets messages of the revoked partitions
//! already buffered in the client and queued in librdkafka. The log is checked afterwards.
//! What this proves, for both protocols:
//!
//! - no member hands out a message of a partition after that partition's revocation was
//!   returned to it, until the partition is assigned to it again (every message a member
//!   gets is of a partition it owns at that moment);
//! - nothing is skipped: within one ownership period a member's offsets of a partition are
//!   consecutive, and each period starts at or before the group's last committed offset;
//! - commits made in the revoke handler succeed unless the partitions were lost (on the
//!   mock, see `revoke_commit_allowed`);
//! - every produced message is consumed at least once, and after the final stable
//!   assignment the group's committed offsets, read by a fresh consumer with
//!   `committed()`, are the end of every partition (also after all members closed);
//! - eager: a joining member makes every existing member revoke everything;
//!   cooperative: only moved partitions are revoked (an existing member keeps the
//!   partitions it does not give away, and a leaving member causes no revocation at all
//!   on the members that stay).

mod common_rebalance;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common_rebalance::{base_config, init_tracing, mock_with_topic, within};
use rdkafka_async::sys::rd_kafka_resp_err_t as E;
use rdkafka_async::{
    AssignmentStrategy, ClientConfig, Consumer, ConsumerEvent, Error, ErrorCode, Offset,
    OffsetReset, Producer, RebalanceKind, Record, TopicPartitionList,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TOPIC: &str = "rebalanced";
const PARTITIONS: i32 = 8;
/// On the mock a rebalance round takes `session.timeout.ms` - 1 s.
const SESSION_TIMEOUT: Duration = Duration::from_millis(3000);
/// Generous: a cooperative membership change takes 2-3 rounds.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);
/// Messages per partition per producer round: enough that members usually have messages
/// buffered when a revocation arrives.
const PER_ROUND: usize = 10;

type MemberId = usize;

#[derive(Clone, Debug)]
enum Entry {
    Phase(&'static str),
    Assign {
        member: MemberId,
        partitions: Vec<i32>,
        cooperative: bool,
    },
    /// Recorded as soon as `next_event` returned the revocation.
    Revoke {
        member: MemberId,
        partitions: Vec<i32>,
        cooperative: bool,
        lost: bool,
        leaving: bool,
    },
    /// The commit made in the revoke handler, before completing it.
    RevokeCommit {
        member: MemberId,
        offsets: Vec<(i32, i64)>,
        lost: bool,
        result: Result<(), String>,
        code: Option<ErrorCode>,
    },
    /// A commit asked for by the test while the group is stable.
    Commit {
        member: MemberId,
        offsets: Vec<(i32, i64)>,
        result: Result<(), String>,
    },
    Message {
        member: MemberId,
        partition: i32,
        offset: i64,
    },
    ConsumerError {
        member: MemberId,
        error: String,
    },
}

#[derive(Default)]
struct State {
    log: Vec<(u64, Entry)>,
    /// Each live member's partitions, as it sees them (for waiting only; the checks
    /// replay the log).
    owned: BTreeMap<MemberId, BTreeSet<i32>>,
    consumed: HashSet<(i32, i64)>,
}

/// What the members, the producer and the test share.
#[derive(Default)]
struct World {
    seq: AtomicU64,
    state: Mutex<State>,
    changed: Notify,
}

impl World {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends to the log under the next sequence number; `update` changes the rest of
    /// the state under the same lock.
    fn record(&self, entry: Entry, update: impl FnOnce(&mut State)) -> u64 {
        let mut state = self.lock();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        state.log.push((seq, entry));
        update(&mut state);
        drop(state);
        self.changed.notify_waiters();
        seq
    }

    /// Waits until `cond` holds on the state (woken by every change), or panics.
    async fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            if cond(&self.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let state = self.lock();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; owned: {:?}; consumed {} messages",
                    state.owned,
                    state.consumed.len()
                );
            }
        }
    }
}

enum Command {
    /// Commit what was processed in the current assignment.
    Commit(oneshot::Sender<Result<(), Error>>),
    /// Unsubscribe (the revocation is handled like any other), then close.
    Leave,
    /// After the next message, stop asking for events until librdkafka has queued a
    /// rebalance event (seen in the statistics' `cgrp.rebalance_cnt`), so that the
    /// revocation is found with messages buffered in the client and queued in
    /// librdkafka, of the very partitions it revokes.
    Stall,
}

/// `cgrp.rebalance_cnt` of the latest statistics: rebalance events librdkafka queued.
fn rebalance_count(consumer: &Consumer) -> Option<u64> {
    let stats = consumer.statistics().borrow().clone()?;
    let json: serde_json::Value = serde_json::from_str(&stats.raw).ok()?;
    json.get("cgrp")?.get("rebalance_cnt")?.as_u64()
}

/// Waits (without polling the consumer) until librdkafka queued a rebalance event after
/// `baseline`, or `timeout` passed; returns whether it did.
async fn stall_until_rebalance_queued(
    consumer: &Consumer,
    baseline: Option<u64>,
    timeout: Duration,
) -> bool {
    let mut stats = consumer.statistics();
    let deadline = Instant::now() + timeout;
    loop {
        if let (Some(now), Some(before)) = (rebalance_count(consumer), baseline) {
            if now > before {
                return true;
            }
        }
        match tokio::time::timeout_at(deadline, stats.changed()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}

struct MemberHandle {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

fn processed_list(
    processed: &BTreeMap<i32, i64>,
    partitions: impl Iterator<Item = i32>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        if let Some(&last) = processed.get(&p) {
            tpl.add(TOPIC, p, Offset::At(last + 1));
        }
    }
    tpl
}

fn offsets_of(tpl: &TopicPartitionList) -> Vec<(i32, i64)> {
    tpl.iter()
        .map(|tp| (tp.partition, tp.offset.absolute().unwrap_or(-1)))
        .collect()
}

fn spawn_member(id: MemberId, config: ClientConfig, world: Arc<World>) -> MemberHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        if let Err(err) = run_member(id, config, world.clone(), rx).await {
            panic!("member {id} failed: {err}");
        }
    });
    MemberHandle { commands: tx, task }
}

async fn run_member(
    id: MemberId,
    config: ClientConfig,
    world: Arc<World>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Result<(), Error> {
    let mut consumer = Consumer::new(config)?;
    consumer.subscribe(&[TOPIC]).await?;
    world.record(Entry::Phase("member started"), |s| {
        s.owned.insert(id, BTreeSet::new());
    });
    let mut owned = BTreeSet::new();
    // Last offset processed, per partition, in the current assignment.
    let mut processed: BTreeMap<i32, i64> = BTreeMap::new();
    let mut leaving = false;
    let mut stall = false;
    loop {
        let event = tokio::select! {
            command = commands.recv(), if !leaving => {
                match command {
                    Some(Command::Commit(reply)) => {
                        let tpl = processed_list(&processed, owned.iter().copied());
                        let result = consumer.commit(&tpl).await;
                        world.record(
                            Entry::Commit {
                                member: id,
                                offsets: offsets_of(&tpl),
                                result: result.clone().map_err(|e| e.to_string()),
                            },
                            |_| {},
                        );
                        let _ = reply.send(result);
                    }
                    Some(Command::Stall) => stall = true,
                    Some(Command::Leave) | None => {
                        leaving = true;
                        consumer.unsubscribe().await?;
                        if owned.is_empty() {
                            break;
                        }
                    }
                }
                continue;
            }
            event = consumer.next_event() => event,
        };
        match event {
            Ok(ConsumerEvent::Message(m)) => {
                assert_eq!(m.topic(), TOPIC);
                let (partition, offset) = (m.partition(), m.offset());
                processed.insert(partition, offset);
                world.record(
                    Entry::Message {
                        member: id,
                        partition,
                        offset,
                    },
                    |s| {
                        s.consumed.insert((partition, offset));
                    },
                );
                if std::mem::take(&mut stall) {
                    let baseline = rebalance_count(&consumer);
                    world.record(Entry::Phase("member stalls"), |_| {});
                    let queued =
                        stall_until_rebalance_queued(&consumer, baseline, Duration::from_secs(10))
                            .await;
                    world.record(
                        Entry::Phase(if queued {
                            "member resumes with a rebalance queued"
                        } else {
                            "member resumes without a rebalance"
                        }),
                        |_| {},
                    );
                }
            }
            Ok(ConsumerEvent::Rebalance(r)) => {
                let partitions: Vec<i32> = r.partitions().iter().map(|tp| tp.partition).collect();
                assert!(r.partitions().iter().all(|tp| tp.topic == TOPIC));
                match r.kind() {
                    RebalanceKind::Assign => {
                        owned.extend(partitions.iter().copied());
                        for p in &partitions {
                            processed.remove(p);
                        }
                        let now = owned.clone();
                        world.record(
                            Entry::Assign {
                                member: id,
                                partitions,
                                cooperative: r.is_cooperative(),
                            },
                            |s| {
                                s.owned.insert(id, now);
                            },
                        );
                        r.complete().await?;
                    }
                    RebalanceKind::Revoke => {
                        let lost = r.is_lost();
                        world.record(
                            Entry::Revoke {
                                member: id,
                                partitions: partitions.clone(),
                                cooperative: r.is_cooperative(),
                                lost,
                                leaving,
                            },
                            |_| {},
                        );
                        // Commit what was processed of the revoked partitions before
                        // letting the group move them.
                        let tpl = processed_list(&processed, partitions.iter().copied());
                        if !tpl.is_empty() {
                            let result = consumer.commit(&tpl).await;
                            world.record(
                                Entry::RevokeCommit {
                                    member: id,
                                    offsets: offsets_of(&tpl),
                                    lost,
                                    code: result.as_ref().err().and_then(Error::code),
                                    result: result.map_err(|e| e.to_string()),
                                },
                                |_| {},
                            );
                        }
                        for p in &partitions {
                            owned.remove(p);
                            processed.remove(p);
                        }
                        let now = owned.clone();
                        r.complete().await?;
                        // Published only once the change is applied.
                        world.record(Entry::Phase("revocation completed"), |s| {
                            s.owned.insert(id, now);
                        });
                        if leaving && owned.is_empty() {
                            break;
                        }
                    }
                }
            }
            Err(Error::Closed) => break,
            Err(err) => {
                world.record(
                    Entry::ConsumerError {
                        member: id,
                        error: err.to_string(),
                    },
                    |_| {},
                );
            }
        }
    }
    let slots = consumer.outstanding_slots();
    within("consumer close", Duration::from_secs(30), consumer.close()).await?;
    world.record(Entry::Phase("member closed"), |s| {
        s.owned.remove(&id);
    });
    assert_eq!(
        slots, 0,
        "member {id}: completion slots left after its last commit"
    );
    Ok(())
}

/// Produces `PER_ROUND` messages per partition per round, waiting for each round's deliveries,
/// until `stop`; returns the delivered offsets of each partition.
async fn produce_until(
    producer: Producer,
    stop: Arc<AtomicBool>,
) -> Result<BTreeMap<i32, Vec<i64>>, Error> {
    let mut delivered: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let mut round = Vec::with_capacity(PER_ROUND * PARTITIONS as usize);
        for _ in 0..PER_ROUND {
            for p in 0..PARTITIONS {
                let value = n.to_string();
                n += 1;
                round.push(
                    producer
                        .send(Record::to(TOPIC).partition(p).value(&value))
                        .await?,
                );
            }
        }
        for delivery in round {
            let d = delivery.await?;
            delivered.entry(d.partition).or_default().push(d.offset);
        }
    }
    Ok(delivered)
}

/// Asks members to stall after their next message until a rebalance is queued.
fn stall(members: &[&MemberHandle]) {
    for m in members {
        m.commands.send(Command::Stall).expect("member alive");
    }
}

/// Members present and their partitions form the expected split: disjoint, covering
/// every partition, with these sizes (in any order).
fn split_is(state: &State, members: &[MemberId], sizes: &[usize]) -> bool {
    let live: Vec<MemberId> = state.owned.keys().copied().collect();
    if live != members {
        return false;
    }
    let mut all = BTreeSet::new();
    let mut got: Vec<usize> = Vec::new();
    for m in members {
        let owned = &state.owned[m];
        got.push(owned.len());
        for p in owned {
            if !all.insert(*p) {
                return false;
            }
        }
    }
    let mut want = sizes.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    got == want && all.len() == PARTITIONS as usize
}

/// Assignments handed out so far, to all members.
fn assignments(state: &State) -> usize {
    state
        .log
        .iter()
        .filter(|(_, e)| matches!(e, Entry::Assign { .. }))
        .count()
}

fn is_rebalancing(err: &Error) -> bool {
    err.code()
        .is_some_and(|c| c.raw() == E::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS)
}

async fn group_committed(config: &ClientConfig) -> BTreeMap<i32, Offset> {
    let checker = Consumer::new(config.clone()).expect("checker consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_range(TOPIC, 0..PARTITIONS, Offset::Invalid);
    let committed = within(
        "committed offsets",
        Duration::from_secs(40),
        checker.committed(&tpl, Duration::from_secs(30)),
    )
    .await
    .expect("committed()");
    within("checker close", Duration::from_secs(30), checker.close())
        .await
        .expect("checker close");
    committed
        .iter()
        .map(|tp| (tp.partition, tp.offset))
        .collect()
}

/// The mock keeps at most 5 MiB or 100,000 message sets per partition and silently drops
/// older ones: check that nothing was dropped, so no check passed on truncated data.
async fn assert_nothing_truncated(config: &ClientConfig) {
    let checker = Consumer::new(config.clone()).expect("checker consumer");
    for p in 0..PARTITIONS {
        let (low, _) = within(
            "watermarks",
            Duration::from_secs(40),
            checker.fetch_watermarks(TOPIC, p, Duration::from_secs(30)),
        )
        .await
        .expect("watermarks");
        assert_eq!(
            low, 0,
            "the mock dropped old messages of partition {p}: make the test produce less"
        );
    }
    within("checker close", Duration::from_secs(30), checker.close())
        .await
        .expect("checker close");
}

async fn scenario(strategy: AssignmentStrategy, group: &str) {
    init_tracing();
    let started = std::time::Instant::now();
    let cooperative = strategy == AssignmentStrategy::CooperativeSticky;
    let cluster = mock_with_topic(1, TOPIC, PARTITIONS);
    let member_config = base_config(&cluster)
        .group_id(group)
        .assignment_strategy(strategy)
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_commit(false)
        .session_timeout(SESSION_TIMEOUT)
        .set("heartbeat.interval.ms", "300")
        .statistics_interval(Duration::from_millis(20));
    let world = Arc::new(World::default());

    let producer =
        Producer::new(base_config(&cluster).linger(Duration::from_millis(5))).expect("producer");
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(produce_until(producer.clone(), stop.clone()));

    // A alone: all partitions.
    world.record(Entry::Phase("A joins"), |_| {});
    let a = spawn_member(0, member_config.clone(), world.clone());
    world
        .wait_for("A to own every partition", PHASE_TIMEOUT, |s| {
            split_is(s, &[0], &[8]) && s.consumed.len() > 100
        })
        .await;

    world.record(Entry::Phase("B joins"), |_| {});
    stall(&[&a]);
    let b = spawn_member(1, member_config.clone(), world.clone());
    world
        .wait_for("A and B to split the partitions 4/4", PHASE_TIMEOUT, |s| {
            split_is(s, &[0, 1], &[4, 4])
        })
        .await;

    world.record(Entry::Phase("C joins"), |_| {});
    stall(&[&a, &b]);
    let c = spawn_member(2, member_config.clone(), world.clone());
    world
        .wait_for(
            "A, B and C to split the partitions 3/3/2",
            PHASE_TIMEOUT,
            |s| split_is(s, &[0, 1, 2], &[3, 3, 2]),
        )
        .await;

    world.record(Entry::Phase("B leaves"), |_| {});
    stall(&[&a, &c]);
    b.commands.send(Command::Leave).expect("B alive");
    within("B to leave and close", PHASE_TIMEOUT, b.task)
        .await
        .expect("member B task");
    world
        .wait_for("A and C to split the partitions 4/4", PHASE_TIMEOUT, |s| {
            split_is(s, &[0, 2], &[4, 4])
        })
        .await;

    // Stop producing; everything produced must be consumed by the two members left.
    world.record(Entry::Phase("drain"), |_| {});
    stop.store(true, Ordering::Release);
    let delivered = within("the producer to stop", Duration::from_secs(60), producing)
        .await
        .expect("producer task")
        .expect("every delivery succeeds");
    within("flush", Duration::from_secs(30), producer.flush())
        .await
        .expect("flush");
    assert_eq!(
        producer.outstanding_slots(),
        0,
        "producer slots left after flush"
    );
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    let mut produced: HashSet<(i32, i64)> = HashSet::new();
    for (p, offsets) in &delivered {
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        let expected: Vec<i64> = (0..sorted.len() as i64).collect();
        assert_eq!(
            sorted, expected,
            "partition {p}: delivered offsets are not 0..n"
        );
        end.insert(*p, sorted.len() as i64);
        produced.extend(offsets.iter().map(|o| (*p, *o)));
    }
    assert_eq!(
        end.len(),
        PARTITIONS as usize,
        "every partition got messages"
    );
    world
        .wait_for(
            "every produced message to be consumed",
            PHASE_TIMEOUT,
            |s| produced.iter().all(|pm| s.consumed.contains(pm)),
        )
        .await;

    // Final stable assignment: each member commits what it processed.
    world.record(Entry::Phase("final commit"), |_| {});
    for m in [&a, &c] {
        let mut attempts = 0;
        loop {
            let assignments_before = assignments(&world.lock());
            let (tx, rx) = oneshot::channel();
            m.commands.send(Command::Commit(tx)).expect("member alive");
            match within("final commit", Duration::from_secs(30), rx)
                .await
                .expect("member answers")
            {
                Ok(()) => break,
                // A last cooperative round may still start after the split was reached
                // (the mock then refuses commits): commit again once it is over, which
                // every member sees as a (possibly empty) assignment.
                Err(err) if is_rebalancing(&err) && attempts < 3 => {
                    attempts += 1;
                    world
                        .wait_for("the last rebalance round to end", PHASE_TIMEOUT, |s| {
                            assignments(s) > assignments_before
                        })
                        .await;
                }
                Err(err) => panic!("a commit in a stable group fails: {err}"),
            }
        }
    }
    let committed = group_committed(&member_config).await;
    let want: BTreeMap<i32, Offset> = end.iter().map(|(p, e)| (*p, Offset::At(*e))).collect();
    assert_eq!(
        committed, want,
        "committed offsets after the final stable assignment"
    );

    world.record(Entry::Phase("close"), |_| {});
    for m in [a, c] {
        m.commands.send(Command::Leave).expect("member alive");
        within("member to leave and close", PHASE_TIMEOUT, m.task)
            .await
            .expect("member task");
    }
    let committed = group_committed(&member_config).await;
    assert_eq!(
        committed, want,
        "committed offsets after every member closed"
    );
    assert_nothing_truncated(&member_config).await;

    let log = std::mem::take(&mut world.lock().log);
    let report = check_log(&log, cooperative);
    eprintln!(
        "{strategy:?}: {} messages produced, {} handed out ({} re-reads), {} revocations, \
         {} stalls ended by a queued rebalance ({} not), \
         revoke commits: {} ok, {} rejected ({}), {:.1} s",
        produced.len(),
        report.messages,
        report.messages - produced.len(),
        report.revocations,
        report.stalls_with_rebalance,
        report.stalls_without,
        report.revoke_commits_ok,
        report.revoke_commits_rejected.len(),
        report.revoke_commits_rejected.join(", "),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        report.violations.is_empty(),
        "{strategy:?}: {} violations, the first ones:\n{}",
        report.violations.len(),
        report.violations[..report.violations.len().min(30)].join("\n")
    );
}

#[derive(Default)]
struct Report {
    messages: usize,
    revocations: usize,
    stalls_with_rebalance: usize,
    stalls_without: usize,
    revoke_commits_ok: usize,
    revoke_commits_rejected: Vec<String>,
    violations: Vec<String>,
}

/// Whether a failed commit in a revoke handler is acceptable.
///
/// Lost partitions cannot be committed. Besides, the mock broker answers every
/// OffsetCommit with REBALANCE_IN_PROGRESS while its group is in its join phase
/// (`rd_kafka_mock_cgrp_classic_check_state`, state JOINING), where a real broker
/// accepts commits of the current generation (PreparingRebalance). An eager revocation
/// always happens in that phase (the member learnt of the rebalance from a heartbeat
/// answered REBALANCE_IN_PROGRESS), and a cooperative one does when another member's
/// rejoin starts the next round first. Such a commit is not applied: the new owner
/// re-reads from the previous commit, which the no-skip check covers.
fn revoke_commit_allowed(lost: bool, code: Option<ErrorCode>) -> bool {
    lost || code.is_some_and(|c| c.raw() == E::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS)
}

/// Replays the log in sequence order and checks every property in the file's doc.
fn check_log(log: &[(u64, Entry)], cooperative: bool) -> Report {
    let mut r = Report::default();
    let mut owned: BTreeMap<MemberId, BTreeSet<i32>> = BTreeMap::new();
    // When each member's partition was last revoked (for the message).
    let mut revoked_at: BTreeMap<(MemberId, i32), u64> = BTreeMap::new();
    // Last offset handed out in the current ownership period.
    let mut last: BTreeMap<(MemberId, i32), i64> = BTreeMap::new();
    // The group's committed offset, as far as successful commits tell.
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    // Revocations seen per phase and member (for the protocol checks).
    let mut phase = "";
    let mut owned_at_phase_start: BTreeMap<MemberId, BTreeSet<i32>> = BTreeMap::new();
    let mut min_owned_in_phase: BTreeMap<MemberId, usize> = BTreeMap::new();
    let mut revoked_in_phase: BTreeMap<MemberId, BTreeSet<i32>> = BTreeMap::new();

    let end_phase = |r: &mut Report,
                     phase: &str,
                     start: &BTreeMap<MemberId, BTreeSet<i32>>,
                     min_owned: &BTreeMap<MemberId, usize>,
                     revoked: &BTreeMap<MemberId, BTreeSet<i32>>,
                     now: &BTreeMap<MemberId, BTreeSet<i32>>| {
        let joining = matches!(phase, "B joins" | "C joins");
        let leaving = phase == "B leaves";
        if !joining && !leaving {
            return;
        }
        for (m, before) in start {
            if before.is_empty() || (leaving && *m == 1) {
                continue;
            }
            let kept = now.get(m).cloned().unwrap_or_default();
            let revoked = revoked.get(m).cloned().unwrap_or_default();
            let min = min_owned.get(m).copied().unwrap_or(before.len());
            if cooperative {
                // Only what moves is revoked: what the member still owns at the end of
                // the phase was never taken away, so it never owned fewer partitions
                // than the ones it had before and keeps.
                let both: Vec<_> = revoked.intersection(&kept).collect();
                if !both.is_empty() {
                    r.violations.push(format!(
                        "{phase}: cooperative member {m} had {both:?} revoked and then given back"
                    ));
                }
                let still_owned = before.intersection(&kept).count();
                if min < still_owned || (joining && min == 0) {
                    r.violations.push(format!(
                        "{phase}: cooperative member {m} went down to {min} partitions (had {before:?}, kept {kept:?})"
                    ));
                }
                if leaving && !revoked.is_empty() {
                    r.violations.push(format!(
                        "{phase}: cooperative member {m} had {revoked:?} revoked although only B left"
                    ));
                }
            } else if !before.is_subset(&revoked) || min != 0 {
                // (Under load a phase can take several generations, so more than what
                // the member had at its start may be revoked; each single revocation
                // is checked to be everything the member owned.)
                r.violations.push(format!(
                    "{phase}: eager member {m} should have had all of {before:?} revoked, got {revoked:?}"
                ));
            }
        }
    };

    for (seq, entry) in log {
        match entry {
            Entry::Phase(name)
                if !name.starts_with("member") && !name.starts_with("revocation") =>
            {
                end_phase(
                    &mut r,
                    phase,
                    &owned_at_phase_start,
                    &min_owned_in_phase,
                    &revoked_in_phase,
                    &owned,
                );
                phase = *name;
                owned_at_phase_start = owned.clone();
                min_owned_in_phase = owned.iter().map(|(m, o)| (*m, o.len())).collect();
                revoked_in_phase.clear();
            }
            Entry::Phase("member resumes with a rebalance queued") => r.stalls_with_rebalance += 1,
            Entry::Phase("member resumes without a rebalance") => r.stalls_without += 1,
            Entry::Phase(_) => {}
            Entry::Assign {
                member,
                partitions,
                cooperative: c,
            } => {
                if *c != cooperative {
                    r.violations
                        .push(format!("#{seq}: assignment says cooperative={c}"));
                }
                let mine = owned.entry(*member).or_default();
                for p in partitions {
                    if !cooperative || !mine.contains(p) {
                        last.remove(&(*member, *p));
                    }
                    if cooperative && mine.contains(p) {
                        r.violations.push(format!(
                            "#{seq}: member {member} was assigned {p}, which it already owned"
                        ));
                    }
                    mine.insert(*p);
                }
                if !cooperative && mine.len() != partitions.len() {
                    r.violations.push(format!(
                        "#{seq}: eager assignment {partitions:?} to member {member} on top of {mine:?}"
                    ));
                }
            }
            Entry::Revoke {
                member,
                partitions,
                cooperative: c,
                lost,
                leaving,
            } => {
                r.revocations += 1;
                if *c != cooperative {
                    r.violations
                        .push(format!("#{seq}: revocation says cooperative={c}"));
                }
                let mine = owned.entry(*member).or_default();
                let revoked: BTreeSet<i32> = partitions.iter().copied().collect();
                if !revoked.is_subset(mine) {
                    r.violations.push(format!(
                        "#{seq}: member {member} had {revoked:?} revoked but owned {mine:?}"
                    ));
                }
                if !cooperative && !*lost && &revoked != mine {
                    r.violations.push(format!(
                        "#{seq}: eager revocation of {revoked:?} from member {member}, which owned {mine:?}"
                    ));
                }
                for p in &revoked {
                    mine.remove(p);
                    revoked_at.insert((*member, *p), *seq);
                    last.remove(&(*member, *p));
                }
                if !*leaving {
                    revoked_in_phase.entry(*member).or_default().extend(revoked);
                    let min = min_owned_in_phase.entry(*member).or_insert(usize::MAX);
                    *min = (*min).min(mine.len());
                }
            }
            Entry::RevokeCommit {
                member,
                offsets,
                lost,
                result,
                code,
            } => match result {
                Ok(()) => {
                    r.revoke_commits_ok += 1;
                    for (p, o) in offsets {
                        committed.insert(*p, *o);
                    }
                }
                Err(err) => {
                    r.revoke_commits_rejected.push(format!(
                        "{}{}",
                        code.map_or("?", |c| c.name()),
                        if *lost { " (lost)" } else { "" }
                    ));
                    if !revoke_commit_allowed(*lost, *code) {
                        r.violations.push(format!(
                            "#{seq}: member {member}'s commit of {offsets:?} on revocation failed: {err}"
                        ));
                    }
                }
            },
            Entry::Commit {
                member,
                offsets,
                result,
            } => match result {
                Ok(()) => {
                    for (p, o) in offsets {
                        committed.insert(*p, *o);
                    }
                }
                // Retried by the test (see the final commit); no other failure is allowed.
                Err(err) if err.contains("REBALANCE_IN_PROGRESS") => {}
                Err(err) => r.violations.push(format!(
                    "#{seq}: member {member}'s commit of {offsets:?} failed: {err}"
                )),
            },
            Entry::Message {
                member,
                partition,
                offset,
            } => {
                r.messages += 1;
                let p = *partition;
                if !owned.get(member).is_some_and(|o| o.contains(&p)) {
                    let since = revoked_at
                        .get(&(*member, p))
                        .map_or("never assigned".to_owned(), |s| format!("revoked at #{s}"));
                    r.violations.push(format!(
                        "#{seq}: member {member} handed out {p}@{offset}, which it does not own ({since})"
                    ));
                    continue;
                }
                match last.get(&(*member, p)) {
                    Some(prev) if *offset != prev + 1 => r.violations.push(format!(
                        "#{seq}: member {member} handed out {p}@{offset} right after {p}@{prev}"
                    )),
                    None => {
                        let from = committed.get(&p).copied().unwrap_or(0);
                        if *offset > from {
                            r.violations.push(format!(
                                "#{seq}: member {member} started {p} at {offset}, past the committed {from}: skipped"
                            ));
                        }
                    }
                    _ => {}
                }
                last.insert((*member, p), *offset);
            }
            Entry::ConsumerError { member, error } => {
                r.violations
                    .push(format!("#{seq}: member {member} got an error: {error}"));
            }
        }
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_range_rebalances_hand_out_nothing_revoked_and_skip_nothing() {
    scenario(AssignmentStrategy::Range, "rebalance-eager").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_rebalances_revoke_only_moved_partitions() {
    scenario(
        AssignmentStrategy::CooperativeSticky,
        "rebalance-cooperative",
    )
    .await;
}

/// Whether a value's type is `Send`, decided at compile time without failing the build
/// when it is not (autoref specialisation), so the answer can be asserted at run time.
struct SendProbe<T>(std::marker::PhantomData<T>);
trait ProbeSend {
    fn is_send(&self) -> bool {
        true
    }
}
impl<T: Send> ProbeSend for SendProbe<T> {}
#[allow(dead_code)] // Used only when the probed type is not `Send`.
trait ProbeNotSend {
    fn is_send(&self) -> bool {
        false
    }
}
impl<T> ProbeNotSend for &SendProbe<T> {}
fn send_probe<T>(_: &T) -> SendProbe<T> {
    SendProbe(std::marker::PhantomData)
}
macro_rules! is_send {
    ($value:expr) => {{
        let probe = send_probe(&$value);
        (&probe).is_send()
    }};
}

/// A member of a group runs in its own task, and commits in its revoke handler: that
/// takes `tokio::spawn`, so every future of the consumer (and of the producer) must be
/// `Send`. The futures are created and dropped unpolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_producer_futures_are_send() {
    init_tracing();
    let cluster = mock_with_topic(1, "send-bounds", 1);
    let mut consumer = Consumer::new(base_config(&cluster).group_id("send-bounds")).unwrap();
    let producer = Producer::new(base_config(&cluster)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add("send-bounds", 0, Offset::At(0));
    let mut not_send = Vec::new();
    let mut check = |name: &'static str, send: bool| {
        if !send {
            not_send.push(name);
        }
    };
    check("Consumer::commit", is_send!(consumer.commit(&tpl)));
    check(
        "Consumer::commit_stored",
        is_send!(consumer.commit_stored()),
    );
    check(
        "Consumer::committed",
        is_send!(consumer.committed(&tpl, Duration::from_secs(1))),
    );
    check("Consumer::next_event", is_send!(consumer.next_event()));
    check("Consumer::recv", is_send!(consumer.recv()));
    check(
        "Consumer::close_within",
        is_send!(consumer.close_within(Duration::from_secs(1))),
    );
    check(
        "Producer::send",
        is_send!(producer.send(Record::to("send-bounds"))),
    );
    check("Producer::flush", is_send!(producer.flush()));
    check("Consumer", is_send!(consumer));
    // `Consumer::commit_message` needs a message; its future wraps `commit`'s.
    assert!(
        not_send.is_empty(),
        "futures that cannot be used in a spawned task: {not_send:?}"
    );
    within("close", Duration::from_secs(30), consumer.close())
        .await
        .unwrap();
}

/// The log checker itself flags what it is meant to flag.
#[test]
fn the_checker_flags_messages_after_revocation_skips_and_eager_partial_revocations() {
    let assign = |member, partitions: &[i32]| Entry::Assign {
        member,
        partitions: partitions.to_vec(),
        cooperative: false,
    };
    let revoke = |member, partitions: &[i32]| Entry::Revoke {
        member,
        partitions: partitions.to_vec(),
        cooperative: false,
        lost: false,
        leaving: false,
    };
    let message = |member, partition, offset| Entry::Message {
        member,
        partition,
        offset,
    };
    let numbered = |entries: Vec<Entry>| -> Vec<(u64, Entry)> {
        entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as u64, e))
            .collect()
    };
    let clean = numbered(vec![
        assign(0, &[0, 1]),
        message(0, 0, 0),
        message(0, 0, 1),
        revoke(0, &[0, 1]),
        assign(0, &[0]),
        message(0, 0, 0),
    ]);
    assert!(check_log(&clean, false).violations.is_empty());
    let after_revoke = numbered(vec![
        assign(0, &[0, 1]),
        revoke(0, &[0, 1]),
        message(0, 1, 0),
    ]);
    assert_eq!(check_log(&after_revoke, false).violations.len(), 1);
    let gap = numbered(vec![assign(0, &[0]), message(0, 0, 0), message(0, 0, 2)]);
    assert_eq!(check_log(&gap, false).violations.len(), 1);
    let late_start = numbered(vec![assign(0, &[0]), message(0, 0, 5)]);
    assert_eq!(check_log(&late_start, false).violations.len(), 1);
    let partial = numbered(vec![assign(0, &[0, 1]), revoke(0, &[1])]);
    assert_eq!(check_log(&partial, false).violations.len(), 1);
}

/// A member that the group gives nothing still gets its (empty) assignment: the consumer
/// hands out rebalances of zero partitions like any other (librdkafka's lists of zero
/// partitions may have no element array at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_without_partitions_get_empty_rebalances() {
    init_tracing();
    for (strategy, group) in [
        (AssignmentStrategy::Range, "empty-eager"),
        (AssignmentStrategy::CooperativeSticky, "empty-cooperative"),
    ] {
        let cluster = mock_with_topic(1, "single", 1);
        let config = base_config(&cluster)
            .group_id(group)
            .assignment_strategy(strategy)
            .session_timeout(Duration::from_millis(2000))
            .set("heartbeat.interval.ms", "200");
        let mut members = [
            Consumer::new(config.clone()).unwrap(),
            Consumer::new(config.clone()).unwrap(),
        ];
        for m in &members {
            m.subscribe(&["single"]).await.unwrap();
        }
        // Partitions each member owns, and whether an empty assignment was handed out.
        let mut owned = [0usize; 2];
        let mut empty_assignments = 0;
        let [first, second] = &mut members;
        within(
            "one member with the partition, one with an empty assignment",
            PHASE_TIMEOUT,
            async {
                while !(empty_assignments > 0 && owned.iter().sum::<usize>() == 1) {
                    let (i, event) = tokio::select! {
                        event = first.next_event() => (0, event),
                        event = second.next_event() => (1, event),
                    };
                    if let ConsumerEvent::Rebalance(r) = event.expect("consumer event") {
                        let n = r.partitions().len();
                        match r.kind() {
                            RebalanceKind::Assign if n == 0 => empty_assignments += 1,
                            RebalanceKind::Assign => owned[i] += n,
                            RebalanceKind::Revoke => owned[i] -= n,
                        }
                        r.complete().await.unwrap();
                    }
                }
            },
        )
        .await;
        eprintln!("{strategy:?}: {empty_assignments} empty assignment(s), owned {owned:?}");
        for m in members {
            within("close", PHASE_TIMEOUT, m.close()).await.unwrap();
        }
    }
}

/// One round of `close_with_rebalances_pending_never_blocks`: two cooperative members
/// share a one-partition topic, then both close, the first while the rebalance caused by
/// the second one's leaving is still queued for it. Returns whether both closes finished
/// within 60 s.
fn close_round(round: usize) -> bool {
    // A round runs on its own thread, watched from this one with a plain timeout: a
    // runtime worker stuck inside librdkafka can also keep the runtime's timers from
    // firing, so a tokio timeout alone might never end a stuck round.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let round_thread = std::thread::spawn(move || {
        close_round_body(round);
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => {
            round_thread.join().expect("round thread");
            true
        }
        // Panicked: report the panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(round_thread.join().expect_err("the round panicked"))
        }
        // Stuck: leave the thread (and its clients) behind.
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
    }
}

fn close_round_body(round: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cluster = mock_with_topic(1, "single", 1);
        let config = base_config(&cluster)
            .group_id(format!("close-pending-{round}"))
            .assignment_strategy(AssignmentStrategy::CooperativeSticky)
            .session_timeout(Duration::from_millis(2000))
            .set("heartbeat.interval.ms", "200");
        let mut first = Consumer::new(config.clone()).unwrap();
        first.subscribe(&["single"]).await.unwrap();
        within("the first member's assignment", PHASE_TIMEOUT, async {
            loop {
                if let ConsumerEvent::Rebalance(r) = first.next_event().await.unwrap() {
                    let n = r.partitions().len();
                    r.complete().await.unwrap();
                    if n > 0 {
                        return;
                    }
                }
            }
        })
        .await;
        let mut second = Consumer::new(config).unwrap();
        second.subscribe(&["single"]).await.unwrap();
        // The second member is assigned (one of them has the partition, the other
        // nothing).
        let mut assigned = [false; 2];
        let mut owned = [1usize, 0];
        within("the second member's assignment", PHASE_TIMEOUT, async {
            while !(assigned[1] && owned[0] + owned[1] == 1) {
                let (i, event) = tokio::select! {
                    event = first.next_event() => (0, event),
                    event = second.next_event() => (1, event),
                };
                if let ConsumerEvent::Rebalance(r) = event.unwrap() {
                    match r.kind() {
                        RebalanceKind::Assign => {
                            assigned[i] = true;
                            owned[i] += r.partitions().len();
                        }
                        RebalanceKind::Revoke => owned[i] -= r.partitions().len(),
                    }
                    r.complete().await.unwrap();
                }
            }
        })
        .await;
        // `close` is bounded (10 s): it returns Ok, or `_TIMED_OUT` when librdkafka's group
        // thread dropped an (un)assign request while terminating (a race inside
        // librdkafka; the request then waits forever on the blocking pool, never on a
        // runtime worker). Either way it returns in time.
        for (name, consumer) in [("second", second), ("first", first)] {
            let started = std::time::Instant::now();
            match consumer.close().await {
                Ok(()) => {}
                Err(err) if err.code().is_some_and(|c| c.raw() == rdkafka_async::sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT) => {
                    eprintln!("round {round}: closing the {name} member timed out (librdkafka dropped a request)");
                }
                Err(err) => panic!("close the {name} member: {err}"),
            }
            assert!(started.elapsed() < Duration::from_secs(15), "close is bounded");
        }
    });
    // Do not wait for a blocking-pool thread stuck in librdkafka (see above).
    rt.shutdown_background();
}

/// Closing applies the rebalances still queued, then librdkafka's own revocation. None of
/// that may block a runtime thread for good, whatever the timing: `close` must always
/// finish (here within 60 s). Three threads run rounds side by side, so that the
/// librdkafka threads and the runtime's compete for the two cores as in a loaded process.
#[test]
fn close_with_rebalances_pending_never_blocks() {
    init_tracing();
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                // After a stuck round, this thread stops: its clients are still blocked.
                (0..12)
                    .map(|i| t * 100 + i)
                    .find(|&round| !close_round(round))
            })
        })
        .collect();
    let stuck: Vec<usize> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("round thread"))
        .collect();
    eprintln!(
        "close with rebalances pending: up to 36 rounds, {} stuck, {:.1} s",
        stuck.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(stuck.is_empty(), "close never finished in rounds {stuck:?}");
}
