//! Windowed tables: a value per key *and time window*, as Faust's tumbling and hopping
//! tables (Kafka Streams' windowed aggregations).
//!
//! A [`WindowedTable`] is made from a [`Table`] with [`Table::tumbling`] or
//! [`Table::hopping`]. It stores its entries in the table's LMDB database and changelog
//! (`<app id>-<name>-changelog`) under the key `key bytes ++ window start`, the start as 8
//! big-endian bytes with the sign bit flipped (so that a key's windows sort by time). Its
//! writes go where [`Table`] writes go: to the partition of the event being processed,
//! else to the key's partition; they are flushed with the table's other writes.
//!
//! Time is event time: every operation takes the time it is about (an [`Event`], whose
//! record timestamp is used, or milliseconds since the epoch; see [`EventTime`]). Each
//! partition keeps the latest event time its updates have seen; a window *closes* when
//! `end + expires <= latest`: it is removed (a tombstone through the ordinary write path)
//! and the [close callback](WindowedTable::on_window_close) runs with its final value.
//! Updates for a window that closed already are dropped ([`WindowedTable::late_updates`]).
//!
//! The windows alive in each partition this worker processes are indexed in memory. The
//! index is built from the store on the first use of a partition (after a start, or after
//! the worker's tasks changed), so windows left in LMDB by an earlier run close too. The
//! latest event time is not stored: after a start it is the latest window start found in
//! the store (a lower bound of the time the previous run had seen), until newer events
//! move it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::store::MAX_KEY_BYTES;
use super::{partitioner, Core, Kind, Table};
use crate::codec::{Codec, CodecError};
use crate::error::{Error, Result};
use crate::event::Event;

/// A time window `[start, end)`, in milliseconds since the epoch.
///
/// ```
/// use faust::table::WindowRange;
/// let w = WindowRange { start: 10_000, end: 20_000 };
/// assert!(w.contains(10_000) && w.contains(19_999) && !w.contains(20_000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowRange {
    /// The first millisecond of the window.
    pub start: i64,
    /// The first millisecond after the window.
    pub end: i64,
}

impl WindowRange {
    /// Whether `ts` (ms) falls in the window.
    ///
    /// ```
    /// # use faust::table::WindowRange;
    /// assert!(WindowRange { start: 0, end: 5 }.contains(4));
    /// ```
    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }
}

impl fmt::Display for WindowRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// How a windowed table cuts time: windows of `size`, a new one every `step` (tumbling
/// windows: `step == size`, so each time is in one window; hopping windows: `step < size`,
/// so windows overlap), each kept until `expires` after its end.
///
/// Windows are aligned on the epoch: their starts are the multiples of `step`.
///
/// ```
/// use std::time::Duration;
/// use faust::table::{WindowRange, Windows};
/// let w = Windows::hopping(Duration::from_secs(10), Duration::from_secs(5), Duration::ZERO);
/// assert_eq!(
///     w.ranges(12_000),
///     vec![WindowRange { start: 5_000, end: 15_000 }, WindowRange { start: 10_000, end: 20_000 }]
/// );
/// assert_eq!(w.current(12_000), WindowRange { start: 10_000, end: 20_000 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    size: i64,
    step: i64,
    expires: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Windows {
    /// Tumbling windows: consecutive windows of `size`, kept `expires` after their end.
    ///
    /// # Panics
    ///
    /// If `size` is under a millisecond.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::Windows;
    /// let w = Windows::tumbling(Duration::from_secs(60), Duration::from_secs(3600));
    /// assert_eq!(w.ranges(61_000).len(), 1);
    /// ```
    pub fn tumbling(size: Duration, expires: Duration) -> Self {
        Self::hopping(size, size, expires)
    }

    /// Hopping windows: windows of `size` starting every `step`, kept `expires` after their
    /// end. A time is in `size / step` windows (rounded up).
    ///
    /// # Panics
    ///
    /// If `step` is under a millisecond, or longer than `size` (the windows would leave
    /// gaps).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::Windows;
    /// let w = Windows::hopping(Duration::from_secs(60), Duration::from_secs(20), Duration::ZERO);
    /// assert_eq!(w.ranges(61_000).len(), 3);
    /// ```
    pub fn hopping(size: Duration, step: Duration, expires: Duration) -> Self {
        let (size, step) = (millis(size), millis(step));
        assert!(step >= 1, "a window step must be at least 1 ms");
        assert!(
            step <= size,
            "a window step ({step} ms) must not be longer than the window ({size} ms)"
        );
        Self {
            size,
            step,
            expires: millis(expires),
        }
    }

    /// The length of a window.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::Windows;
    /// let w = Windows::tumbling(Duration::from_secs(60), Duration::ZERO);
    /// assert_eq!(w.size(), Duration::from_secs(60));
    /// ```
    pub fn size(&self) -> Duration {
        Duration::from_millis(self.size.unsigned_abs())
    }

    /// The time between the starts of consecutive windows (the size, for tumbling ones).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::Windows;
    /// let w = Windows::tumbling(Duration::from_secs(60), Duration::ZERO);
    /// assert_eq!(w.step(), w.size());
    /// ```
    pub fn step(&self) -> Duration {
        Duration::from_millis(self.step.unsigned_abs())
    }

    /// How long a window is kept after its end.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::Windows;
    /// let w = Windows::tumbling(Duration::from_secs(60), Duration::from_secs(5));
    /// assert_eq!(w.expires(), Duration::from_secs(5));
    /// ```
    pub fn expires(&self) -> Duration {
        Duration::from_millis(self.expires.unsigned_abs())
    }

    /// Whether windows do not overlap.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::Windows;
    /// assert!(Windows::tumbling(Duration::from_secs(1), Duration::ZERO).is_tumbling());
    /// ```
    pub fn is_tumbling(&self) -> bool {
        self.step == self.size
    }

    /// The windows that contain `ts` (ms), oldest first.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::{WindowRange, Windows};
    /// let w = Windows::tumbling(Duration::from_secs(10), Duration::ZERO);
    /// assert_eq!(w.ranges(-1), vec![WindowRange { start: -10_000, end: 0 }]);
    /// ```
    pub fn ranges(&self, ts: i64) -> Vec<WindowRange> {
        let mut out = Vec::with_capacity(usize::try_from(self.size / self.step).unwrap_or(1) + 1);
        let mut start = ts.saturating_sub(ts.rem_euclid(self.step));
        loop {
            let end = start.saturating_add(self.size);
            if end <= ts {
                break;
            }
            out.push(WindowRange { start, end });
            if start == i64::MIN {
                break;
            }
            start = start.saturating_sub(self.step);
        }
        out.reverse();
        out
    }

    /// The newest window that contains `ts` (ms): the one that starts last.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::{WindowRange, Windows};
    /// let w = Windows::tumbling(Duration::from_secs(10), Duration::ZERO);
    /// assert_eq!(w.current(25_000), WindowRange { start: 20_000, end: 30_000 });
    /// ```
    pub fn current(&self, ts: i64) -> WindowRange {
        let start = ts.saturating_sub(ts.rem_euclid(self.step));
        WindowRange {
            start,
            end: start.saturating_add(self.size),
        }
    }

    /// The window that starts at `start`.
    fn at(&self, start: i64) -> WindowRange {
        WindowRange {
            start,
            end: start.saturating_add(self.size),
        }
    }

    /// When a window closes: `expires` after its end.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use faust::table::{WindowRange, Windows};
    /// let w = Windows::tumbling(Duration::from_secs(10), Duration::from_secs(5));
    /// assert_eq!(w.closes_at(w.current(0)), 15_000);
    /// ```
    pub fn closes_at(&self, window: WindowRange) -> i64 {
        window.end.saturating_add(self.expires)
    }
}

/// A point in event time, in milliseconds since the epoch: an `i64`, an [`Event`] (the
/// timestamp of its record), or a [`SystemTime`].
///
/// ```
/// use faust::table::EventTime;
/// assert_eq!(1_700_000_000_000_i64.event_time(), Some(1_700_000_000_000));
/// assert!(std::time::SystemTime::now().event_time().unwrap() > 1_700_000_000_000);
/// ```
pub trait EventTime {
    /// The time, `None` if unknown (an event that did not come from a Kafka record).
    fn event_time(&self) -> Option<i64>;
}

impl EventTime for i64 {
    fn event_time(&self) -> Option<i64> {
        Some(*self)
    }
}

impl EventTime for SystemTime {
    fn event_time(&self) -> Option<i64> {
        Some(match self.duration_since(UNIX_EPOCH) {
            Ok(d) => millis(d),
            Err(e) => millis(e.duration()).saturating_neg(),
        })
    }
}

impl<K, V> EventTime for Event<K, V> {
    fn event_time(&self) -> Option<i64> {
        self.timestamp()
    }
}

impl<T: EventTime + ?Sized> EventTime for &T {
    fn event_time(&self) -> Option<i64> {
        (**self).event_time()
    }
}

type CloseFn<K, V> = Arc<dyn Fn(&K, WindowRange, &V) + Send + Sync>;

/// A table of values per key and time window. Cloning is cheap (a handle).
///
/// Made with [`Table::tumbling`] or [`Table::hopping`]; configure the table (default,
/// codecs, partitions) before. What it provides:
///
/// | method | what |
/// |---|---|
/// | [`update_current`](Self::update_current) | changes every window that contains the time |
/// | [`get_current`](Self::get_current), [`get_at`](Self::get_at) | the value of the newest window that contains the time |
/// | [`get_now`](Self::get_now) | the same for the wall clock |
/// | [`delta`](Self::delta) | the same for the time minus a duration |
/// | [`windows`](Self::windows) | a key's windows that start in a range of time |
/// | [`partition_items`](Self::partition_items) | every window of a partition |
/// | [`on_window_close`](Self::on_window_close) | a callback for each window that closes |
///
/// ```
/// use std::time::Duration;
/// use faust::App;
/// let app = App::new("site");
/// let views = app
///     .table::<String, u64>("page_views")
///     .default(0)
///     .tumbling(Duration::from_secs(60), Duration::from_secs(3600))
///     .on_window_close(|page: &String, window, count: &u64| {
///         println!("{page}: {count} views in {window}");
///     });
/// let pages = app.topic::<String, String>("page_visits");
/// app.agent("count", &pages, move |mut stream| {
///     let views = views.clone();
///     async move {
///         while let Some(event) = stream.next_event().await {
///             let page = event.value().clone();
///             views.update_current(&page, &event, |n| *n += 1)?;
///         }
///         Ok(())
///     }
/// });
/// assert_eq!(app.table_names(), vec!["page_views".to_string()]);
/// ```
pub struct WindowedTable<K, V> {
    core: Arc<Core<K, V>>,
    shared: Arc<Shared<K, V>>,
}

impl<K, V> Clone for WindowedTable<K, V> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<K, V> fmt::Debug for WindowedTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowedTable")
            .field("name", &self.core.name)
            .field("changelog", &self.core.changelog)
            .field("windows", &self.shared.windows)
            .finish()
    }
}

struct Shared<K, V> {
    windows: Windows,
    /// The codec of the keys (the table's, before windowing).
    keys: Arc<dyn Codec<K>>,
    on_close: RwLock<Option<CloseFn<K, V>>>,
    index: Mutex<Index>,
    late: AtomicU64,
    closed: AtomicU64,
}

/// The live windows of the partitions this worker processes.
#[derive(Default)]
struct Index {
    /// The worker's active tasks; any change of them drops every partition's index (the
    /// store may have changed under it: a partition lost, restored, kept as a standby).
    tasks: Option<watch::Receiver<BTreeSet<i32>>>,
    parts: HashMap<i32, Live>,
    /// The latest event time seen per partition (kept when the index is dropped: time
    /// only moves forward).
    latest: HashMap<i32, i64>,
}

/// The live windows of one partition.
#[derive(Default)]
struct Live {
    /// (window start, key bytes), so the oldest windows come first.
    by_start: BTreeSet<(i64, Vec<u8>)>,
    /// key bytes -> its windows' starts.
    by_key: HashMap<Vec<u8>, BTreeSet<i64>>,
}

impl Live {
    fn insert(&mut self, kb: &[u8], start: i64) {
        if self.by_start.insert((start, kb.to_vec())) {
            self.by_key.entry(kb.to_vec()).or_default().insert(start);
        }
    }

    fn remove(&mut self, kb: &[u8], start: i64) {
        self.by_start.remove(&(start, kb.to_vec()));
        if let Some(starts) = self.by_key.get_mut(kb) {
            starts.remove(&start);
            if starts.is_empty() {
                self.by_key.remove(kb);
            }
        }
    }
}

/// A window closed while the index was locked; its callback runs after.
struct Closed<V> {
    key: Vec<u8>,
    window: WindowRange,
    value: Option<V>,
}

/// The key codec of the table once windowed: encodes keys as the table's codec did, and
/// decodes stored keys (key bytes ++ window start) to their key, so that whatever decodes
/// the table's stored or changelog keys (checking changelog records, listing a table) gets
/// the key of each window.
struct WindowedKeys<K>(Arc<dyn Codec<K>>);

impl<K: 'static> Codec<K> for WindowedKeys<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn encode(&self, value: &K) -> Result<Vec<u8>, CodecError> {
        self.0.encode(value)
    }
    fn decode(&self, bytes: &[u8]) -> Result<K, CodecError> {
        match split_key(bytes) {
            Some((kb, _)) => self.0.decode(kb),
            None => Err(CodecError {
                codec: self.0.name(),
                message: format!(
                    "a windowed table key has at least 8 bytes, not {}",
                    bytes.len()
                ),
            }),
        }
    }
}

/// The stored key of a key's window.
fn window_key(kb: &[u8], start: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(kb.len() + 8);
    k.extend_from_slice(kb);
    k.extend_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// The key bytes and window start of a stored key.
fn split_key(bytes: &[u8]) -> Option<(&[u8], i64)> {
    let at = bytes.len().checked_sub(8)?;
    let (kb, start) = bytes.split_at(at);
    let start = u64::from_be_bytes(start.try_into().ok()?) ^ (1 << 63);
    Some((kb, start as i64))
}

impl<K, V> Table<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Makes this a table of tumbling windows (Faust's `.tumbling(size, expires=...)`):
    /// consecutive windows of `size`, each closed `expires` after its end.
    ///
    /// # Panics
    ///
    /// If `size` is under a millisecond, or the table is global.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let app = faust::App::new("site");
    /// let views = app
    ///     .table::<String, u64>("page_views")
    ///     .default(0)
    ///     .tumbling(Duration::from_secs(60), Duration::from_secs(3600));
    /// assert!(views.windows_spec().is_tumbling());
    /// ```
    pub fn tumbling(self, size: Duration, expires: Duration) -> WindowedTable<K, V> {
        self.windowed(Windows::tumbling(size, expires))
    }

    /// Makes this a table of hopping windows (Faust's `.hopping(size, step, expires=...)`):
    /// windows of `size` starting every `step`, each closed `expires` after its end.
    ///
    /// # Panics
    ///
    /// If `step` is under a millisecond or longer than `size`, or the table is global.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let app = faust::App::new("site");
    /// let views = app.table::<String, u64>("page_views").default(0).hopping(
    ///     Duration::from_secs(60),
    ///     Duration::from_secs(10),
    ///     Duration::from_secs(3600),
    /// );
    /// assert!(!views.windows_spec().is_tumbling());
    /// ```
    pub fn hopping(self, size: Duration, step: Duration, expires: Duration) -> WindowedTable<K, V> {
        self.windowed(Windows::hopping(size, step, expires))
    }

    /// Makes this a windowed table with the given windows.
    ///
    /// # Panics
    ///
    /// If the table is global (windows close per partition of a partitioned table).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use faust::table::Windows;
    /// let app = faust::App::new("site");
    /// let w = Windows::tumbling(Duration::from_secs(1), Duration::ZERO);
    /// let views = app.table::<String, u64>("page_views").windowed(w);
    /// assert_eq!(views.windows_spec(), w);
    /// ```
    pub fn windowed(self, windows: Windows) -> WindowedTable<K, V> {
        assert!(
            self.core.kind == Kind::Table,
            "table {}: a global table cannot be windowed",
            self.core.name
        );
        let keys = self.core.key_codec();
        self.core
            .windowed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *self
            .core
            .key_codec
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(WindowedKeys(keys.clone()));
        WindowedTable {
            core: self.core,
            shared: Arc::new(Shared {
                windows,
                keys,
                on_close: RwLock::new(None),
                index: Mutex::new(Index::default()),
                late: AtomicU64::new(0),
                closed: AtomicU64::new(0),
            }),
        }
    }
}

impl<K, V> WindowedTable<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Calls `f(key, window, final value)` for each window that closes (Faust's
    /// `on_window_close`), on the worker that processes the window's partition, from the
    /// agent whose update (or read) moved the partition's time past the window's close.
    /// Each window closes once; only a crash between a close and the next flush of the
    /// table makes it close again after the restart (like an event processed again). Keep
    /// `f` short: it runs inside the agent; to send the result somewhere, hand it to a
    /// channel or a task.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let app = faust::App::new("site");
    /// let views = app
    ///     .table::<String, u64>("page_views")
    ///     .default(0)
    ///     .tumbling(Duration::from_secs(60), Duration::ZERO)
    ///     .on_window_close(|page, window, count| println!("{page} {window}: {count}"));
    /// # drop(views);
    /// ```
    pub fn on_window_close(self, f: impl Fn(&K, WindowRange, &V) + Send + Sync + 'static) -> Self {
        *self
            .shared
            .on_close
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
        self
    }

    /// The table's name.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let app = faust::App::new("site");
    /// let views = app.table::<String, u64>("views").tumbling(Duration::from_secs(1), Duration::ZERO);
    /// assert_eq!(views.name(), "views");
    /// ```
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The changelog topic, `<app id>-<name>-changelog`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let app = faust::App::new("site");
    /// let views = app.table::<String, u64>("views").tumbling(Duration::from_secs(1), Duration::ZERO);
    /// assert_eq!(views.changelog_topic(), "site-views-changelog");
    /// ```
    pub fn changelog_topic(&self) -> &str {
        &self.core.changelog
    }

    /// The windows of the table.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let app = faust::App::new("site");
    /// let views = app.table::<String, u64>("views").tumbling(Duration::from_secs(1), Duration::ZERO);
    /// assert_eq!(views.windows_spec().size(), Duration::from_secs(1));
    /// ```
    pub fn windows_spec(&self) -> Windows {
        self.shared.windows
    }

    /// Window updates dropped by this worker because their window had closed (late
    /// events; a hopping event counts once per closed window it falls in).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let app = faust::App::new("site");
    /// let views = app.table::<String, u64>("views").tumbling(Duration::from_secs(1), Duration::ZERO);
    /// assert_eq!(views.late_updates(), 0);
    /// ```
    pub fn late_updates(&self) -> u64 {
        self.shared.late.load(Ordering::Relaxed)
    }

    /// Windows closed (removed) by this worker since it started.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let app = faust::App::new("site");
    /// let views = app.table::<String, u64>("views").tumbling(Duration::from_secs(1), Duration::ZERO);
    /// assert_eq!(views.closed_windows(), 0);
    /// ```
    pub fn closed_windows(&self) -> u64 {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Changes the value of `key` in every window that contains the time `at` (one for
    /// tumbling windows, several for hopping ones), starting from the table's default in
    /// windows that have no value yet; returns the number of windows changed.
    ///
    /// `at` is the event's time: pass the [`Event`] (its record's timestamp) or a time in
    /// ms. It moves the partition's latest event time forward, which closes the windows
    /// whose `end + expires` it reached, before the update. Windows of `at` that closed
    /// already are not changed (a late event: counted in
    /// [`late_updates`](Self::late_updates), logged at debug level); an out-of-order event
    /// for a window still open changes it normally.
    ///
    /// Errors: no running worker, an event without a timestamp, a key that does not
    /// encode or is too long, no default for a new window, the store failing.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let app = faust::App::new("site");
    /// # let pages = app.topic::<String, String>("page_visits");
    /// let views = app.table::<String, u64>("views").default(0)
    ///     .tumbling(Duration::from_secs(60), Duration::ZERO);
    /// app.agent("count", &pages, move |mut stream| {
    ///     let views = views.clone();
    ///     async move {
    ///         while let Some(event) = stream.next_event().await {
    ///             views.update_current(event.value(), &event, |n| *n += 1)?;
    ///         }
    ///         Ok(())
    ///     }
    /// });
    /// ```
    pub fn update_current(
        &self,
        key: &K,
        at: impl EventTime,
        mut f: impl FnMut(&mut V),
    ) -> Result<usize> {
        let ts = self.time(&at)?;
        let kb = self.encode(key)?;
        let p = self.partition(&kb)?;
        let windows = self.shared.windows;
        self.with_partition(p, Some(ts), |mut live, latest| {
            let mut changed = 0;
            let mut late = 0;
            for w in windows.ranges(ts) {
                if windows.closes_at(w) <= latest {
                    late += 1;
                    continue;
                }
                self.core
                    .update_bytes(window_key(&kb, w.start), p, |v| f(v))?;
                if let Some(live) = live.as_mut() {
                    live.insert(&kb, w.start);
                }
                changed += 1;
            }
            if late > 0 {
                self.shared.late.fetch_add(late, Ordering::Relaxed);
                tracing::debug!(
                    table = %self.core.name,
                    partition = p,
                    ts,
                    latest,
                    windows = late,
                    "late event: its window closed already; dropped"
                );
            }
            Ok(changed)
        })
    }

    /// The value of `key` in the newest window that contains the time `at` (an [`Event`]
    /// or ms; see [`update_current`](Self::update_current)), if it has one.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn demo(views: faust::table::WindowedTable<String, u64>, event: faust::Event<String, String>) -> faust::Result<()> {
    /// let so_far = views.get_current(event.value(), &event)?.unwrap_or(0);
    /// # Ok(()) }
    /// ```
    pub fn get_current(&self, key: &K, at: impl EventTime) -> Result<Option<V>> {
        let ts = self.time(&at)?;
        self.get_at(key, ts)
    }

    /// The value of `key` in the newest window that contains `ts` (ms since the epoch).
    ///
    /// ```no_run
    /// # fn demo(views: faust::table::WindowedTable<String, u64>) -> faust::Result<()> {
    /// let v = views.get_at(&"home".to_string(), 1_700_000_000_000)?;
    /// # Ok(()) }
    /// ```
    pub fn get_at(&self, key: &K, ts: i64) -> Result<Option<V>> {
        let kb = self.encode(key)?;
        let p = self.partition(&kb)?;
        let start = self.shared.windows.current(ts).start;
        self.with_partition(p, None, |_, _| {
            self.core.get_bytes(&window_key(&kb, start), p)
        })
    }

    /// The value of `key` in the newest window that contains the wall clock's now
    /// (Faust's `.now()`).
    ///
    /// ```no_run
    /// # fn demo(views: faust::table::WindowedTable<String, u64>) -> faust::Result<()> {
    /// let this_minute = views.get_now(&"home".to_string())?.unwrap_or(0);
    /// # Ok(()) }
    /// ```
    pub fn get_now(&self, key: &K) -> Result<Option<V>> {
        let now = self.time(&SystemTime::now())?;
        self.get_at(key, now)
    }

    /// The value of `key` in the newest window that contains the time `at` minus `d`
    /// (Faust's `.delta()`): with tumbling windows of a minute, `delta(k, &event,
    /// 60 s)` is the previous minute's value.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn demo(views: faust::table::WindowedTable<String, u64>, event: faust::Event<String, String>) -> faust::Result<()> {
    /// let previous_minute = views.delta(event.value(), &event, Duration::from_secs(60))?;
    /// # Ok(()) }
    /// ```
    pub fn delta(&self, key: &K, at: impl EventTime, d: Duration) -> Result<Option<V>> {
        let ts = self.time(&at)?;
        self.get_at(key, ts.saturating_sub(millis(d)))
    }

    /// The windows of `key` that start in `starts` (ms), oldest first, with their values
    /// (Kafka Streams' `fetch(key, from, to)`). Closed windows are gone.
    ///
    /// ```no_run
    /// # fn demo(views: faust::table::WindowedTable<String, u64>) -> faust::Result<()> {
    /// for (window, count) in views.windows(&"home".to_string(), 1_700_000_000_000..)? {
    ///     println!("{window}: {count}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn windows(&self, key: &K, starts: impl RangeBounds<i64>) -> Result<Vec<(WindowRange, V)>> {
        let kb = self.encode(key)?;
        let p = self.partition(&kb)?;
        let range = (
            clone_bound(starts.start_bound()),
            clone_bound(starts.end_bound()),
        );
        self.with_partition(p, None, |live, _| {
            let starts: Vec<i64> = match live {
                Some(live) => live
                    .by_key
                    .get(&kb)
                    .map(|s| s.range(range).copied().collect())
                    .unwrap_or_default(),
                None => self
                    .scan(p)?
                    .into_iter()
                    .filter(|(k, start)| *k == kb && range.contains(start))
                    .map(|(_, start)| start)
                    .collect(),
            };
            let mut out = Vec::with_capacity(starts.len());
            for start in starts {
                if let Some(v) = self.core.get_bytes(&window_key(&kb, start), p)? {
                    out.push((self.shared.windows.at(start), v));
                }
            }
            Ok(out)
        })
    }

    /// Every window of one partition held by this worker, in key order then time order.
    ///
    /// ```no_run
    /// # fn demo(views: faust::table::WindowedTable<String, u64>) -> faust::Result<()> {
    /// for (page, window, count) in views.partition_items(0)? {
    ///     println!("{page} {window}: {count}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn partition_items(&self, partition: i32) -> Result<Vec<(K, WindowRange, V)>> {
        self.with_partition(partition, None, |_, _| {
            let vc = self.core.value_codec();
            let mut merged: BTreeMap<Vec<u8>, Option<V>> = BTreeMap::new();
            for (k, v) in self.core.store()?.entries(&self.core.name, partition)? {
                merged.insert(k, Some(vc.decode(&v)?));
            }
            {
                let layers = self.core.layers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(l) = layers.get(&partition) {
                    for (k, v) in l.flushing.iter().chain(l.dirty.iter()) {
                        merged.insert(k.clone(), v.clone());
                    }
                }
            }
            let kc = &self.shared.keys;
            let mut out = Vec::with_capacity(merged.len());
            for (k, v) in merged {
                let (Some(v), Some((kb, start))) = (v, split_key(&k)) else {
                    continue;
                };
                out.push((kc.decode(kb)?, self.shared.windows.at(start), v));
            }
            Ok(out)
        })
    }

    fn time(&self, at: &impl EventTime) -> Result<i64> {
        at.event_time().ok_or_else(|| Error::Table {
            table: self.core.name.to_string(),
            reason: "the event has no timestamp (it did not come from a Kafka record)".into(),
        })
    }

    fn encode(&self, key: &K) -> Result<Vec<u8>> {
        let kb = self.shared.keys.encode(key)?;
        if kb.len() + 8 > MAX_KEY_BYTES {
            return Err(Error::Table {
                table: self.core.name.to_string(),
                reason: format!(
                    "a key of {} bytes is longer than the {} bytes a windowed table key may have",
                    kb.len(),
                    MAX_KEY_BYTES - 8
                ),
            });
        }
        Ok(kb)
    }

    /// Where the windows of `kb` are: the current event's partition, else the key's.
    fn partition(&self, kb: &[u8]) -> Result<i32> {
        let n = self.core.partitions_resolved()?;
        Ok(crate::current::partition()
            .filter(|p| *p < n)
            .unwrap_or_else(|| partitioner::partition_for(kb, n)))
    }

    /// Runs `f` with partition `p`'s live windows (`None` if `p` is not one of this
    /// worker's active tasks) and latest event time, after moving that time to `advance`
    /// and closing the windows it reached; then runs the close callbacks (also when `f`
    /// fails).
    fn with_partition<R>(
        &self,
        p: i32,
        advance: Option<i64>,
        f: impl FnOnce(Option<&mut Live>, i64) -> Result<R>,
    ) -> Result<R> {
        let mut closed = Vec::new();
        let result = {
            let mut index = self.shared.index.lock().unwrap_or_else(|e| e.into_inner());
            self.prepare(&mut index, p, advance, &mut closed)
                .and_then(|latest| {
                    let Index { parts, .. } = &mut *index;
                    f(parts.get_mut(&p), latest)
                })
        };
        self.notify(closed);
        result
    }

    /// Brings partition `p`'s index up to date (see [`Self::with_partition`]); returns
    /// its latest event time (`i64::MIN` when not indexed).
    fn prepare(
        &self,
        index: &mut Index,
        p: i32,
        advance: Option<i64>,
        closed: &mut Vec<Closed<V>>,
    ) -> Result<i64> {
        let rt = self.core.app.runtime()?;
        match &mut index.tasks {
            None => {
                index.tasks = Some(rt.active.subscribe());
                index.parts.clear();
            }
            Some(rx) => {
                if rx.has_changed().unwrap_or(false) {
                    let _ = rx.borrow_and_update();
                    index.parts.clear();
                }
            }
        }
        let active = index
            .tasks
            .as_ref()
            .is_some_and(|rx| rx.borrow().contains(&p));
        if !active {
            return Ok(i64::MIN);
        }
        if !index.parts.contains_key(&p) {
            let mut live = Live::default();
            for (kb, start) in self.scan(p)? {
                live.insert(&kb, start);
            }
            if let Some((newest, _)) = live.by_start.last() {
                let latest = index.latest.entry(p).or_insert(i64::MIN);
                *latest = (*latest).max(*newest);
            }
            tracing::debug!(
                table = %self.core.name,
                partition = p,
                windows = live.by_start.len(),
                "indexed the live windows of a partition"
            );
            index.parts.insert(p, live);
        }
        let latest = index.latest.entry(p).or_insert(i64::MIN);
        if let Some(ts) = advance {
            *latest = (*latest).max(ts);
        }
        let latest = *latest;
        let live = index.parts.get_mut(&p).expect("indexed above");
        self.expire(live, p, latest, closed)?;
        Ok(latest)
    }

    /// Closes the windows of partition `p` that `latest` reached: tombstones them and
    /// queues them for the callback.
    fn expire(
        &self,
        live: &mut Live,
        p: i32,
        latest: i64,
        closed: &mut Vec<Closed<V>>,
    ) -> Result<()> {
        let windows = self.shared.windows;
        while let Some((start, kb)) = live.by_start.first() {
            let window = windows.at(*start);
            if windows.closes_at(window) > latest {
                break;
            }
            let wk = window_key(kb, *start);
            let value = self.core.get_bytes(&wk, p)?;
            self.core.write(wk, p, None);
            let (start, kb) = (*start, kb.clone());
            live.remove(&kb, start);
            tracing::trace!(table = %self.core.name, partition = p, %window, "window closed");
            closed.push(Closed {
                key: kb,
                window,
                value,
            });
        }
        Ok(())
    }

    /// Runs the close callback for windows closed.
    fn notify(&self, closed: Vec<Closed<V>>) {
        if closed.is_empty() {
            return;
        }
        self.shared
            .closed
            .fetch_add(closed.len() as u64, Ordering::Relaxed);
        let Some(f) = self
            .shared
            .on_close
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let kc = &self.shared.keys;
        for c in closed {
            let Some(value) = c.value else { continue };
            match kc.decode(&c.key) {
                Ok(key) => f(&key, c.window, &value),
                Err(err) => tracing::error!(
                    table = %self.core.name,
                    window = %c.window,
                    %err,
                    "a closed window's key does not decode; its close callback is skipped"
                ),
            }
        }
    }

    /// The windows (key bytes, start) of partition `p`: the store's, with the writes not
    /// flushed yet over them.
    fn scan(&self, p: i32) -> Result<Vec<(Vec<u8>, i64)>> {
        // The cached writes first: a flush that ends meanwhile puts them in the store,
        // which is read after, so nothing is missed.
        let cached: Vec<(Vec<u8>, bool)> = {
            let layers = self.core.layers.lock().unwrap_or_else(|e| e.into_inner());
            layers
                .get(&p)
                .map(|l| {
                    l.flushing
                        .iter()
                        .chain(l.dirty.iter())
                        .map(|(k, v)| (k.clone(), v.is_some()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut keys: BTreeMap<Vec<u8>, bool> = self
            .core
            .store()?
            .entries(&self.core.name, p)?
            .into_iter()
            .map(|(k, _)| (k, true))
            .collect();
        keys.extend(cached);
        Ok(keys
            .into_iter()
            .filter(|(_, present)| *present)
            .filter_map(|(k, _)| split_key(&k).map(|(kb, start)| (kb.to_vec(), start)))
            .collect())
    }
}

fn clone_bound(b: Bound<&i64>) -> Bound<i64> {
    match b {
        Bound::Included(x) => Bound::Included(*x),
        Bound::Excluded(x) => Bound::Excluded(*x),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: i64, end: i64) -> WindowRange {
        WindowRange { start, end }
    }

    #[test]
    fn tumbling_windows_hold_each_time_once() {
        let t = Windows::tumbling(Duration::from_secs(10), Duration::from_secs(5));
        assert_eq!(t.ranges(0), vec![w(0, 10_000)]);
        assert_eq!(t.ranges(9_999), vec![w(0, 10_000)]);
        assert_eq!(t.ranges(10_000), vec![w(10_000, 20_000)]);
        assert_eq!(t.ranges(-1), vec![w(-10_000, 0)]);
        assert_eq!(t.current(15_000), w(10_000, 20_000));
        assert_eq!(t.closes_at(w(10_000, 20_000)), 25_000);
        assert!(t.is_tumbling());
    }

    #[test]
    fn hopping_windows_overlap() {
        let h = Windows::hopping(
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::ZERO,
        );
        assert_eq!(h.ranges(7_000), vec![w(0, 10_000), w(5_000, 15_000)]);
        assert_eq!(h.ranges(10_000), vec![w(5_000, 15_000), w(10_000, 20_000)]);
        assert_eq!(h.current(7_000), w(5_000, 15_000));
        // A size that the step does not divide: 10 s every 3 s.
        let odd = Windows::hopping(
            Duration::from_secs(10),
            Duration::from_secs(3),
            Duration::ZERO,
        );
        let got = odd.ranges(10_000);
        assert_eq!(
            got,
            vec![w(3_000, 13_000), w(6_000, 16_000), w(9_000, 19_000)]
        );
        assert!(got.iter().all(|r| r.contains(10_000)));
        assert!(!h.is_tumbling());
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let t = Windows::tumbling(Duration::from_secs(10), Duration::from_secs(u64::MAX));
        assert_eq!(t.ranges(i64::MAX - 1).len(), 1);
        assert_eq!(t.ranges(i64::MIN).len(), 1);
        assert_eq!(t.closes_at(t.current(0)), i64::MAX);
    }

    #[test]
    #[should_panic(expected = "must not be longer")]
    fn a_step_longer_than_the_window_is_refused() {
        let _ = Windows::hopping(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::ZERO,
        );
    }

    #[test]
    fn window_keys_round_trip_and_sort_by_time() {
        for start in [i64::MIN, -10_000, -1, 0, 1, 1_700_000_000_000, i64::MAX] {
            let k = window_key(b"user", start);
            assert_eq!(split_key(&k), Some((&b"user"[..], start)));
        }
        let a = window_key(b"k", -5_000);
        let b = window_key(b"k", 0);
        let c = window_key(b"k", 5_000);
        assert!(a < b && b < c);
        assert_eq!(split_key(b"short"), None);
    }

    #[test]
    fn the_windowed_key_codec_decodes_stored_keys_to_their_key() {
        let c = WindowedKeys::<String>(Arc::new(crate::codec::Auto));
        let kb = c.encode(&"alice".to_string()).unwrap();
        assert_eq!(kb, b"alice");
        let stored = window_key(&kb, 1_700_000_000_000);
        assert_eq!(c.decode(&stored).unwrap(), "alice");
        assert!(c.decode(b"short").is_err());
    }

    #[test]
    fn the_index_keeps_keys_and_starts_together() {
        let mut live = Live::default();
        live.insert(b"a", 10);
        live.insert(b"a", 0);
        live.insert(b"b", 0);
        live.insert(b"a", 0);
        assert_eq!(live.by_start.len(), 3);
        assert_eq!(live.by_start.first(), Some(&(0, b"a".to_vec())));
        live.remove(b"a", 0);
        live.remove(b"a", 10);
        assert!(!live.by_key.contains_key(b"a".as_slice()));
        assert_eq!(live.by_key[b"b".as_slice()].len(), 1);
    }

    #[test]
    fn system_times_before_the_epoch_are_negative() {
        let t = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(t.event_time(), Some(-1_000));
    }
}
