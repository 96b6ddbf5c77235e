//! The disk alarm: a full disk stops writes, cluster-wide, before it stops a node.
//!
//! Every node watches its data directory ([`DiskMonitor`]): the file system's free space
//! (`statvfs`) against a floor ([`DiskLimits::min_free_bytes`]), the directory's size against a
//! quota ([`DiskLimits::quota_bytes`]), and whether its Raft log or its database has already
//! failed a write for lack of space. When one of them trips, the node refuses writes itself at
//! once and raises an **alarm** through the Raft log, as etcd's `NOSPACE` alarm is: an entry
//! "node N raised (or cleared) its disk alarm, because ..." that every replica applies. While
//! any alarm is active, every node refuses writes before proposing them, with an error that
//! starts with [`NOSPACE`] and names the node and the directory; the leader also refuses them
//! when they are forwarded to it. Reads (linearizable ones included) go on, and so do deletes
//! (`DEL`), which is how space is given back, as under etcd's alarm. The floor is kept free so
//! that the alarm trips before the disk is really full: the node that raises it still has room to
//! log it, to flush its memtables and to finish the writes in flight.
//!
//! An alarm is cleared by the node that raised it once its disk is below the limits again (by
//! a margin, so that it does not flap), and writes resume by themselves, without a restart.
//! Alarms are soft state: a node keeps them in memory, from the entries it applied. A node
//! with an active alarm raises it again every [`REASSERT`], so that a node that restarted or
//! installed a snapshot (which forgets alarms) learns it again within that time, and an alarm
//! not raised again for [`LAPSE`] (its node is down or gone) no longer counts.
//!
//! ```text
//! alarm entry := 0xA5 version:u8(=1) raised:u8(0|1) node:u64le reason:utf8 (≤ 512 bytes)
//! ```
//!
//! The first byte tells an alarm entry from a request ([`crate::command`], whose first byte is
//! its format version, 1); a replica applies an alarm entry as a no-op of the state machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use raft::NodeId;

/// The first word of the error a refused write gets (the RESP error code), as etcd's
/// `NOSPACE` alarm and Redis's `MISCONF` say.
pub const NOSPACE: &str = "NOSPACE";

/// The first byte of an alarm entry.
const ALARM_TAG: u8 = 0xA5;
/// The alarm entry format this release writes and reads.
const ALARM_VERSION: u8 = 1;
/// The longest reason an alarm entry carries.
const MAX_REASON_BYTES: usize = 512;

/// A node with an active alarm raises it again this often.
pub const REASSERT: Duration = Duration::from_secs(5);
/// An alarm not raised again for this long no longer counts (its node is down or gone).
pub const LAPSE: Duration = Duration::from_secs(30);
/// A node proposes a change of its alarm at most this often (the proposal may be lost).
const PROPOSE_EVERY: Duration = Duration::from_millis(500);
/// A raise this node has not seen applied yet is proposed again at most this often (its own
/// log may be stalled on the full disk while the others apply every copy).
const RAISE_AGAIN_UNSEEN: Duration = Duration::from_secs(2);

/// One alarm entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlarmEntry {
    pub(crate) node: NodeId,
    pub(crate) raised: bool,
    pub(crate) reason: String,
}

/// Encodes an alarm entry.
pub(crate) fn encode(entry: &AlarmEntry) -> Bytes {
    let mut reason = entry.reason.as_str();
    while reason.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    let mut out = vec![ALARM_TAG, ALARM_VERSION, u8::from(entry.raised)];
    out.extend_from_slice(&entry.node.to_le_bytes());
    out.extend_from_slice(reason.as_bytes());
    out.into()
}

/// Decodes `data` if it is an alarm entry: `None` if it is not one (another kind of entry),
/// `Some(Err)` if it claims to be one but does not decode.
pub(crate) fn decode(data: &[u8]) -> Option<Result<AlarmEntry, String>> {
    let (&ALARM_TAG, rest) = data.split_first()? else { return None };
    Some(match rest {
        [ALARM_VERSION, raised @ (0 | 1), tail @ ..] if tail.len() >= 8 => {
            let (node, reason) = tail.split_at(8);
            let node = u64::from_le_bytes(node.try_into().expect("8 bytes"));
            match std::str::from_utf8(reason) {
                Ok(reason) if reason.len() <= MAX_REASON_BYTES => {
                    Ok(AlarmEntry { node, raised: *raised == 1, reason: reason.to_string() })
                }
                _ => Err("an alarm entry whose reason is not short UTF-8".into()),
            }
        }
        [version, ..] if *version != ALARM_VERSION => {
            Err(format!("alarm entry format {version} is unknown (this release reads 1)"))
        }
        _ => Err("a malformed alarm entry".into()),
    })
}

/// The alarms a node knows of, from the entries it applied.
#[derive(Debug, Default)]
pub(crate) struct Alarms {
    /// By node: why, and when it was last raised (applied here).
    active: BTreeMap<NodeId, (String, Instant)>,
}

impl Alarms {
    /// Applies one alarm entry.
    pub(crate) fn apply(&mut self, entry: AlarmEntry) {
        if entry.raised {
            self.active.insert(entry.node, (entry.reason, Instant::now()));
        } else {
            self.active.remove(&entry.node);
        }
    }

    /// Forgets every alarm (after a snapshot: their nodes raise them again).
    pub(crate) fn clear(&mut self) {
        self.active.clear();
    }

    /// The alarms that count now: (node, reason), by node.
    pub(crate) fn current(&self) -> Vec<(NodeId, String)> {
        let now = Instant::now();
        self.active
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) < LAPSE)
            .map(|(node, (why, _))| (*node, why.clone()))
            .collect()
    }

    /// When `node`'s alarm was last raised, if it is active.
    pub(crate) fn raised_at(&self, node: NodeId) -> Option<Instant> {
        self.active.get(&node).map(|(_, at)| *at)
    }
}

/// The error for a write refused because of `alarms` (node, reason), or `None` if there is
/// none. It starts with [`NOSPACE`].
pub(crate) fn refusal(alarms: &[(NodeId, String)]) -> Option<String> {
    let (node, why) = alarms.first()?;
    let others =
        if alarms.len() > 1 { format!(" (and {} more)", alarms.len() - 1) } else { "".into() };
    Some(format!(
        "{NOSPACE} writes are refused while a disk is full: node {node}: {why}{others}. Reads \
         and deletes still work; writes resume by themselves once space is freed"
    ))
}

/// What a node's disk may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLimits {
    /// The data directory watched.
    pub dir: PathBuf,
    /// Most bytes the directory may hold (everything under it); `None`: no quota.
    pub quota_bytes: Option<u64>,
    /// Least free space left on the directory's file system (as an unprivileged user sees
    /// it), kept in reserve so that the alarm trips before the disk is full.
    pub min_free_bytes: u64,
    /// The directory holding the state (the database), whose size estimates a snapshot's:
    /// snapshots are deferred while the file system has less than twice that free.
    pub state_dir: Option<PathBuf>,
}

/// What the monitor last measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes of the files under the data directory.
    pub used_bytes: u64,
    /// Free bytes on its file system, for an unprivileged user.
    pub free_bytes: u64,
    /// The file system's size.
    pub total_bytes: u64,
}

/// A limit clears only once the usage is this far inside it (a twentieth of it, at least
/// 1 MiB), so that the alarm does not flap at the edge.
fn margin(limit: u64) -> u64 {
    (limit / 20).max(1 << 20)
}

impl DiskLimits {
    /// Why `usage` breaks these limits, or `None`. `alarmed`: whether the alarm is up now
    /// (then it holds until the usage is back inside the limits by a margin).
    pub fn verdict(&self, usage: &DiskUsage, alarmed: bool) -> Option<String> {
        let dir = self.dir.display();
        if let Some(quota) = self.quota_bytes {
            let limit = if alarmed { quota.saturating_sub(margin(quota)) } else { quota };
            if usage.used_bytes >= limit {
                return Some(format!(
                    "{dir} holds {} bytes, over --quota-bytes {quota}",
                    usage.used_bytes
                ));
            }
        }
        let floor = self.min_free_bytes;
        let floor = if alarmed { floor.saturating_add(margin(floor)) } else { floor };
        if floor > 0 && usage.free_bytes < floor {
            return Some(format!(
                "the file system of {dir} has {} bytes free, under --min-free-bytes {}",
                usage.free_bytes, self.min_free_bytes
            ));
        }
        None
    }
}

/// Measures `dir`: the size of everything under it, and its file system's free space.
///
/// # Errors
/// If the directory cannot be read or `statvfs` fails.
pub fn measure(dir: &Path) -> std::io::Result<DiskUsage> {
    let (free_bytes, total_bytes) = statvfs(dir)?;
    Ok(DiskUsage { used_bytes: dir_bytes(dir)?, free_bytes, total_bytes })
}

/// The bytes of the files under `dir` (a file that vanishes meanwhile counts nothing).
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d != dir => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// (free bytes for an unprivileged user, total bytes) of the file system holding `dir`.
#[cfg(unix)]
#[allow(clippy::useless_conversion)] // The fields are narrower than u64 on some platforms.
fn statvfs(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a path with a NUL byte"))?;
    // SAFETY: statvfs is all zeros-valid plain data.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a valid struct for statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = u64::from(st.f_frsize);
    Ok((u64::from(st.f_bavail).saturating_mul(unit), u64::from(st.f_blocks).saturating_mul(unit)))
}

#[cfg(not(unix))]
fn statvfs(_dir: &Path) -> std::io::Result<(u64, u64)> {
    Ok((u64::MAX, u64::MAX))
}

/// What the monitor saw last, for `INFO`.
#[derive(Debug, Default)]
struct Seen {
    usage: DiskUsage,
    /// Why this node's disk is in trouble now, if it is.
    problem: Option<String>,
    /// A measurement failed: why.
    error: Option<String>,
}

/// Something else that may report lack of space: the node's database, say.
pub type SpaceProbe = Box<dyn Fn() -> Option<String> + Send>;

/// Watches one node's disk and raises and clears its alarm (see the module documentation).
/// Stops when dropped.
pub struct DiskMonitor {
    seen: Arc<Mutex<Seen>>,
    limits: DiskLimits,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for DiskMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskMonitor").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl DiskMonitor {
    /// Starts watching `limits.dir` every `every` for `server`: the limits, the Raft log
    /// ([`raft::Node::storage_stall`]) and each of `probes`.
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub fn start(
        server: crate::KvServer,
        limits: DiskLimits,
        probes: Vec<SpaceProbe>,
        every: Duration,
    ) -> std::io::Result<DiskMonitor> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, limits2) = (Arc::clone(&seen), Arc::clone(&stop), limits.clone());
        if let Ok(usage) = measure(&limits.dir)
            && limits.min_free_bytes >= usage.total_bytes
        {
            log::warn!(
                "--min-free-bytes {} is not below the size of the file system of {} ({} bytes): \
                 writes will be refused for good; lower it (and --memtable-bytes, which sets its \
                 default)",
                limits.min_free_bytes,
                limits.dir.display(),
                usage.total_bytes
            );
        }
        if let Some(state) = limits.state_dir.clone() {
            let dir = limits.dir.clone();
            server.set_snapshot_guard(Box::new(move || {
                let free = statvfs(&dir).map_or(u64::MAX, |(free, _)| free);
                free >= dir_bytes(&state).unwrap_or(0).saturating_mul(2)
            }));
        }
        let thread = std::thread::Builder::new().name("kv-disk".into()).spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                let alarmed = seen2.lock().problem.is_some();
                let measured = measure(&limits2.dir);
                let mut problem = match &measured {
                    Ok(usage) => limits2.verdict(usage, alarmed),
                    Err(_) => None,
                };
                let stall = server.node().storage_stall();
                problem = problem.or(stall).or_else(|| probes.iter().find_map(|probe| probe()));
                {
                    let mut seen = seen2.lock();
                    if problem.is_some() != seen.problem.is_some() {
                        match &problem {
                            Some(why) => log::warn!("disk alarm: {why}; refusing writes"),
                            None => log::info!(
                                "disk alarm over: {} is below its limits",
                                limits2.dir.display()
                            ),
                        }
                    }
                    match measured {
                        Ok(usage) => {
                            seen.usage = usage;
                            seen.error = None;
                        }
                        Err(e) => seen.error = Some(e.to_string()),
                    }
                    seen.problem.clone_from(&problem);
                }
                server.set_disk_problem(problem);
                std::thread::sleep(every);
            }
        })?;
        Ok(DiskMonitor { seen, limits, stop, thread: Some(thread) })
    }

    /// Lines for `INFO` (`# Disk` section) on this node's disk.
    pub fn info(&self) -> String {
        let seen = self.seen.lock();
        let mut out = String::new();
        out.push_str(&format!("disk_dir:{}\r\n", self.limits.dir.display()));
        out.push_str(&format!("disk_used_bytes:{}\r\n", seen.usage.used_bytes));
        out.push_str(&format!("disk_free_bytes:{}\r\n", seen.usage.free_bytes));
        out.push_str(&format!("disk_total_bytes:{}\r\n", seen.usage.total_bytes));
        out.push_str(&format!("disk_quota_bytes:{}\r\n", self.limits.quota_bytes.unwrap_or(0)));
        out.push_str(&format!("disk_min_free_bytes:{}\r\n", self.limits.min_free_bytes));
        out.push_str(&format!(
            "disk_local_problem:{}\r\n",
            seen.problem.as_deref().or(seen.error.as_deref()).unwrap_or("none")
        ));
        out
    }
}

impl Drop for DiskMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// This node's side of its own alarm: what it last measured and proposed.
#[derive(Debug, Default)]
pub(crate) struct Local {
    /// Why this node's disk is in trouble, as the monitor last said.
    pub(crate) problem: Option<String>,
    /// When this node last proposed a change of its alarm.
    pub(crate) proposed: Option<Instant>,
    /// When this node last proposed to raise its alarm.
    pub(crate) raised: Option<Instant>,
}

impl Local {
    /// The alarm entry to propose now, if any: raise it if the disk is in trouble and the
    /// alarm is not active (or due to be raised again), clear it if the disk is fine and the
    /// alarm is active. Proposals are spaced by at least [`PROPOSE_EVERY`].
    pub(crate) fn due(&mut self, me: NodeId, raised_at: Option<Instant>) -> Option<AlarmEntry> {
        let now = Instant::now();
        if self.proposed.is_some_and(|at| now.duration_since(at) < PROPOSE_EVERY) {
            return None;
        }
        let entry = match (&self.problem, raised_at) {
            (Some(_), None)
                if self.raised.is_some_and(|at| now.duration_since(at) < RAISE_AGAIN_UNSEEN) =>
            {
                return None;
            }
            (Some(why), None) => AlarmEntry { node: me, raised: true, reason: why.clone() },
            (Some(why), Some(at)) if now.duration_since(at) >= REASSERT => {
                AlarmEntry { node: me, raised: true, reason: why.clone() }
            }
            (None, Some(_)) => AlarmEntry { node: me, raised: false, reason: String::new() },
            _ => return None,
        };
        self.proposed = Some(now);
        if entry.raised {
            self.raised = Some(now);
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_entries_round_trip_and_anything_else_is_told_apart() {
        let entry = AlarmEntry { node: 3, raised: true, reason: "disk /d is full".into() };
        let data = encode(&entry);
        assert_eq!(decode(&data), Some(Ok(entry)));
        let clear = AlarmEntry { node: 3, raised: false, reason: String::new() };
        assert_eq!(decode(&encode(&clear)), Some(Ok(clear)));
        let request = crate::command::encode(&kvproto::proto::Request {
            client_id: 1,
            seq: 1,
            op: kvproto::proto::Op::Count,
            ordered: false,
        });
        assert_eq!(decode(&request), None, "a request is not an alarm");
        assert_eq!(decode(&[]), None);
        assert!(decode(&[ALARM_TAG]).unwrap().is_err());
        assert!(
            decode(&[ALARM_TAG, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0])
                .unwrap()
                .unwrap_err()
                .contains("format 2")
        );
        assert!(decode(&[ALARM_TAG, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap().is_err());
        assert!(decode(&[ALARM_TAG, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]).unwrap().is_err());
        let long = AlarmEntry { node: 1, raised: true, reason: "é".repeat(400) };
        let decoded = decode(&encode(&long)).unwrap().unwrap();
        assert!(decoded.reason.len() <= MAX_REASON_BYTES, "a long reason is cut");
    }

    #[test]
    fn limits_trip_and_clear_with_a_margin() {
        let limits = DiskLimits {
            dir: "/data".into(),
            quota_bytes: Some(100 << 20),
            min_free_bytes: 40 << 20,
            state_dir: None,
        };
        let usage = |used: u64, free: u64| DiskUsage {
            used_bytes: used << 20,
            free_bytes: free << 20,
            total_bytes: 1 << 40,
        };
        assert_eq!(limits.verdict(&usage(50, 500), false), None);
        let why = limits.verdict(&usage(100, 500), false).unwrap();
        assert!(why.contains("/data holds") && why.contains("--quota-bytes"), "{why}");
        assert!(limits.verdict(&usage(97, 500), true).is_some(), "within the margin: held");
        assert_eq!(limits.verdict(&usage(94, 500), true), None);
        let why = limits.verdict(&usage(10, 39), false).unwrap();
        assert!(why.contains("under --min-free-bytes"), "{why}");
        assert!(limits.verdict(&usage(10, 41), true).is_some(), "within the margin: held");
        assert_eq!(limits.verdict(&usage(10, 43), true), None);
        let open =
            DiskLimits { dir: "/d".into(), quota_bytes: None, min_free_bytes: 0, state_dir: None };
        assert_eq!(open.verdict(&usage(u64::MAX >> 20, 0), false), None);
    }

    #[test]
    fn a_node_raises_again_while_in_trouble_and_clears_once() {
        let mut local = Local { problem: Some("full".into()), proposed: None, raised: None };
        let raise = local.due(2, None).expect("raise");
        assert!(raise.raised && raise.node == 2 && raise.reason == "full");
        assert_eq!(local.due(2, None), None, "not again at once");
        local.proposed = Some(Instant::now() - PROPOSE_EVERY);
        assert_eq!(local.due(2, None), None, "an unseen raise waits longer (a stalled log)");
        local.raised = Some(Instant::now() - RAISE_AGAIN_UNSEEN);
        assert!(local.due(2, None).expect("raised again").raised);
        local.proposed = Some(Instant::now() - PROPOSE_EVERY);
        assert_eq!(local.due(2, Some(Instant::now())), None, "active and fresh");
        let stale = Instant::now() - REASSERT;
        assert!(local.due(2, Some(stale)).expect("raised again").raised);
        local.problem = None;
        local.proposed = None;
        assert!(!local.due(2, Some(Instant::now())).expect("cleared").raised);
        local.proposed = None;
        assert_eq!(local.due(2, None), None, "nothing to clear");
    }

    #[test]
    fn the_refusal_names_the_node_and_starts_with_nospace() {
        assert_eq!(refusal(&[]), None);
        let why = refusal(&[(2, "the file system of /d has 5 bytes free".into())]).unwrap();
        assert!(why.starts_with("NOSPACE ") && why.contains("node 2: the file system of /d"));
        assert!(refusal(&[(1, "a".into()), (3, "b".into())]).unwrap().contains("(and 1 more)"));
    }

    #[test]
    fn measuring_a_directory_counts_its_files() {
        let dir = std::env::temp_dir().join(format!("kv-disk-measure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("sub/b"), vec![0u8; 234]).unwrap();
        let usage = measure(&dir).unwrap();
        assert_eq!(usage.used_bytes, 1234);
        assert!(usage.total_bytes > 0 && usage.free_bytes <= usage.total_bytes);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(measure(&dir).is_err());
    }
}
