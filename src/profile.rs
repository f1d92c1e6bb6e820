//! Pass timing, a debugging aid: with `LONGSEQ_PASS_TIMES=1` (or [`set_enabled`]), the engines
//! that mark their passes submit and wait after each one and add its wall time here, so
//! [`pass_times`] says where an op's time goes (lavapipe has no timestamp queries). Off by
//! default: the waits serialise work the device would otherwise overlap with recording.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// 0 = not read from the environment yet, 1 = off, 2 = on.
static STATE: AtomicU8 = AtomicU8::new(0);
static TIMES: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

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
}

pub(crate) fn add(name: &'static str, t: Duration) {
    let mut m = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    let e = m.entry(name).or_insert((0, Duration::ZERO));
    e.0 += 1;
    e.1 += t;
}

/// The times gathered since the last call (by name), and clears them.
pub fn pass_times() -> Vec<PassTime> {
    let mut m = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *m)
        .into_iter()
        .map(|(name, (count, total))| PassTime { name, count, total })
        .collect()
}
