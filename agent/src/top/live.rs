//! The live screen: reads the ledger each second, redraws, and answers keys at once. The
//! terminal is put back (raw mode off, main screen, cursor shown) on every way out, panics
//! included.
use std::time::{Duration, Instant};

use crossterm::event::{self, Event};
use jiff::Zoned;

use super::input::{self, State};
use super::query::{Ledger, Snapshot};
use super::quota::{QuotaSource, QuotaView};
use super::view::{self, Screen};

const TICK: Duration = Duration::from_secs(1);

/// Restores the terminal when dropped, whether the loop ends, fails or panics.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn run(mut ledger: Ledger, window_s: u64, quotas: QuotaSource) -> Result<(), String> {
    // Before the set-up, which may fail half-way (restoring a terminal never set up is harmless);
    // dropped after `terminal`, which shows the cursor again.
    let _restore = Restore;
    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let name = ledger.path().display().to_string();
    let mut state = State::default();
    let mut snap = Snapshot::default();
    let mut error: Option<String> = None;
    let mut quota: Option<QuotaView> = None;
    let mut next_read = Instant::now();
    let mut page = 1;
    loop {
        let now = Zoned::now();
        if Instant::now() >= next_read {
            // A failed read (the agent holding a lock too long, the file replaced) is shown,
            // and the last numbers stay until the next read succeeds.
            match ledger.read(&now, window_s) {
                Ok(s) => {
                    snap = s;
                    error = None;
                }
                Err(e) => error = Some(e),
            }
            quota = quotas.read(now.timestamp());
            next_read += TICK;
            if next_read < Instant::now() {
                next_read = Instant::now() + TICK;
            }
        }
        let clock = now.strftime("%H:%M:%S").to_string();
        let screen = Screen {
            ledger: &name,
            window_s,
            clock: &clock,
            snap: &snap,
            state: &state,
            error: error.as_deref(),
            quota: quota.as_ref(),
        };
        terminal.draw(|f| page = view::draw(f, &screen)).map_err(|e| format!("cannot draw: {e}"))?;
        let wait = next_read.saturating_duration_since(Instant::now());
        if event::poll(wait).map_err(|e| format!("cannot read the keyboard: {e}"))? {
            if let Event::Key(k) = event::read().map_err(|e| format!("cannot read the keyboard: {e}"))? {
                let rows = view::groups(&snap, state.view, state.sort).len();
                if !state.apply(input::action(&k), rows, page) {
                    return Ok(());
                }
            }
        }
    }
}
