//! The quota status file (`[enforcement] status_file`), written atomically each tick for
//! `tokentap quota status` and `tokentap top`. Field names are the shared contract's
//! (`QuotaStatus`); amounts are integers in the limit's unit (tokens, requests, pico-USD).
use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::engine::Engine;

pub fn render(engine: &Engine, now: Timestamp, host: &str) -> Value {
    let entitlements: Vec<Value> = engine
        .budgets
        .counters()
        .iter()
        .map(|c| {
            let e = &c.entitlement;
            let b = c.bounds();
            json!({
                "name": e.name,
                "scope": e.scope.as_str(),
                "limit_kind": e.limit.kind.as_str(),
                "unit": e.limit.kind.unit(),
                // Strings: pico-USD limits exceed what JSON readers hold exactly as numbers.
                "limit": c.limit().to_string(),
                "used": c.used().to_string(),
                "reserved": c.reserved().to_string(),
                "remaining": c.remaining().to_string(),
                "overrun": c.overrun().to_string(),
                "window": e.window.span.as_str(),
                "sliding": e.window.sliding,
                "window_start": b.start.to_string(),
                "window_end": b.end.to_string(),
                "state": c.state().as_str(),
                "action": e.action.as_str(),
            })
        })
        .collect();
    json!({ "written_at": now.to_string(), "host": host, "entitlements": entitlements })
}

/// Writes the status next to its final name, then renames it over (readers never see half).
pub fn write(path: &Path, engine: &Engine, now: Timestamp) -> std::io::Result<()> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let value = render(engine, now, host.trim());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string_pretty(&value).unwrap_or_default().as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::budget::Usage;
    use crate::enforce::policy::{Labels, Policy};

    #[test]
    fn status_names_every_entitlement() {
        let p = Policy::parse(
            "p.toml",
            "[[entitlement]]\nname = \"b\"\nmatch = { team = \"b\" }\nlimit = { cost_usd = 1 }\nwindow = \"1d\"\naction = \"deny\"\n",
        )
        .unwrap();
        let now: Timestamp = "2026-11-28T14:00:00Z".parse().unwrap();
        let mut e = Engine::new(&p, 0.5, 10, now);
        let labels = Labels { team: "b".into(), ..Default::default() };
        e.budgets.settle(None, &labels, Usage::call(1, 1, 250_000_000_000), now);
        let v = render(&e, now, "h");
        let x = &v["entitlements"][0];
        assert_eq!(
            (x["name"].as_str(), x["used"].as_str(), x["remaining"].as_str()),
            (Some("b"), Some("250000000000"), Some("750000000000"))
        );
        assert_eq!((x["state"].as_str(), x["window_end"].as_str()), (Some("ok"), Some("2026-11-29T00:00:00Z")));
        let dir = std::env::temp_dir().join(format!("tokentap-status-{}", std::process::id()));
        let f = dir.join("quota.json");
        write(&f, &e, now).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(back["entitlements"][0]["unit"], "pico_usd");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
