//! Pass timing, a debugging aid: with `LONGSEQ_PASS_TIMES=1` (or [`set_enabled`]), the engines
//! that mark their passes submit and wait after each one and add its wall time here, so
//! [`pass_times`] says where an op's time goes (lavapipe has no timestamp queries), with the
//! process's CPU time over the same span (on Linux; on lavapipe that is the device's work, and
//! it depends less on other processes' load than wall time). Off by default: the waits
//! serialise work the device would otherwise overlap with recording.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// 0 = not read from the environment yet, 1 = off, 2 = on.
static STATE: AtomicU8 = AtomicU8::new(0);
type Entry = (u64, Duration, Duration);
static TIMES: Mutex<BTreeMap<&'static str, Entry>> = Mutex::new(BTreeMap::new());

/// Whether passes are timed (`LONGSEQ_PASS_TIMES` set to anything but `0`, unless overridden).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("LONGSEQ_PASS_TIMES").is_ok_and(|v| v != "0");
            STATE.store(1 + on as u8, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Turns pass timing on or off for the whole process.
pub fn set_enabled(on: bool) {
    STATE.store(1 + on as u8, Ordering::Relaxed);
}

/// One entry of [`pass_times`]: a pass's name, how often it ran and its total wall time.
#[derive(Clone, Debug)]
pub struct PassTime {
    /// The pass (entry point) name.
    pub name: &'static str,
    /// Dispatches timed.
    pub count: u64,
    /// Their summed wall time, submit to completion.
    pub total: Duration,
    /// The process's CPU time (user + system, all threads) over the same spans; zero where
    /// unknown (not Linux). Resolution: the kernel's clock tick (10 ms).
    pub cpu: Duration,
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn add(name: &'static str, wall: Duration, cpu: Duration) {
    let mut m = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    let e = m.entry(name).or_insert((0, Duration::ZERO, Duration::ZERO));
    e.0 += 1;
    e.1 += wall;
    e.2 += cpu;
}

/// User + system CPU time of the whole process so far (Linux: /proc/self/stat, 100 ticks/s).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The times gathered since the last call (by name), and clears them.
pub fn pass_times() -> Vec<PassTime> {
    let mut m = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *m)
        .into_iter()
        .map(|(name, (count, total, cpu))| PassTime {
            name,
            count,
            total,
            cpu,
        })
        .collect()
}
