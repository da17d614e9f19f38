//! Reports from a Prometheus-compatible backend that holds the agents' exact `tokentap_*`
//! counters (scraped from `export.prometheus_listen`, or received over OTLP/remote-write):
//! `tokentap report --prometheus URL`.
//!
//! No extrapolation: raw samples are read with range selectors (`metric[1h]` evaluated at the
//! end of each hour of the period, so each answer stays small), the baseline is each series'
//! last sample at or before the period start (within [`BASELINE_LOOKBACK`]; a series first
//! seen inside the period counts from 0, as the agent's counter did, and so does a series that
//! a running agent did not export just before the period: its last value is from an earlier
//! run), and the increases
//! between consecutive samples are summed. After an agent restart the new value counts in full:
//! a restart is a new `tokentap_agent_start_time_seconds` of the agent whose labels
//! (`instance`, `job`) the series carries, or, for agents that do not export it, a drop of the
//! value. Series that differ only by `instance`/`job` (two agents) are separate series.
//!
//! Precision, compared with the agents' ledgers:
//! - calls an agent metered after its last scrape and before it stopped never reach Prometheus
//!   (at most one scrape interval per stop);
//! - without the start-time gauge (older agents, or a backend that drops it), a restarted agent
//!   whose counter is already above its old value at the first scrape after the restart looks
//!   like no restart: the calls up to the old value are missed (a series that counted 1 call
//!   before the restart and 3 in the first interval after it counts 2);
//! - costs are float sums (rounded to the pico-USD, exact to the cent for any real month) and
//!   rows carry no unit prices (`priced: None`);
//! - hourly: a period is read by whole UTC hours, a call counting in the hour of the scrape that
//!   first saw it.
pub mod api;
pub mod increase;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::{blocking::Client, Url};

use self::api::{Labels, Samples};
use self::increase::{HOUR_MS, METRICS, START_TIME};
use crate::report::rows::{Period, Row, UsageSource};

/// How far before the period start a series' last sample is looked for.
pub const BASELINE_LOOKBACK: &str = "7d";
/// A series scraped this recently before the period start was exported by its agent's run then
/// (Prometheus's own staleness window: longer than any sane scrape or export interval).
const RECENT: &str = "5m";
const TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PromSource {
    base: Url,
    client: Client,
}

impl PromSource {
    /// `url`: the backend's base (`http://prometheus:9090`, or a path prefix such as
    /// `http://vm:8428/select/0/prometheus`). Checked here; nothing is fetched yet.
    pub fn new(url: &str) -> Result<PromSource, String> {
        let mut base = Url::parse(url.trim()).map_err(|e| format!("--prometheus {url:?}: not a URL ({e})"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(format!("--prometheus {url:?}: want an http:// or https:// URL"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        // reqwest takes rustls' process-wide provider (a no-op when one is installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| format!("--prometheus {url}: {e}"))?;
        Ok(PromSource { base, client })
    }

    /// One instant query at `time_s`; the answer's series.
    fn query(&self, promql: &str, time_s: i64, name: Option<&str>) -> Result<Vec<(Labels, Samples)>, String> {
        let endpoint = self.base.join("api/v1/query").map_err(|e| format!("{}: {e}", self.base))?;
        let url = Url::parse_with_params(endpoint.as_str(), &[("query", promql), ("time", &time_s.to_string())])
            .map_err(|e| format!("{endpoint}: {e}"))?;
        let at = Timestamp::from_second(time_s).map(|t| t.to_string()).unwrap_or_else(|_| time_s.to_string());
        let fail = |what: String| format!("{endpoint} (query {promql:?} at {at}): {what}");
        let resp = self.client.get(url).send().map_err(|e| fail(crate::errors::chain(&e)))?;
        let status = resp.status();
        let body = resp.bytes().map_err(|e| fail(format!("reading the answer: {}", crate::errors::chain(&e))))?;
        if !status.is_success() {
            // Prometheus explains a refused query in a JSON body; anything else is summarised.
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .filter(|v| v.get("status").is_some())
                .map(|v| api::api_error(&v))
                .unwrap_or_else(|| api::summary(&body));
            return Err(fail(format!("HTTP {status}: {why}")));
        }
        api::parse(&body, name).map_err(fail)
    }
}

/// Every series a report reads: the counters and the agents' start times.
fn names() -> Vec<&'static str> {
    METRICS.iter().map(|(n, _)| *n).chain([START_TIME]).collect()
}

fn counters_selector() -> String {
    format!("{{__name__=~\"{}\"}}", names().join("|"))
}

/// `[from, to)` widened to whole hours, in ms.
fn whole_hours(period: &Period) -> (i64, i64) {
    let from = period.from.as_millisecond().div_euclid(HOUR_MS) * HOUR_MS;
    let to = (period.to.as_millisecond() + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    (from, to.max(from))
}

impl UsageSource for PromSource {
    fn describe(&self) -> String {
        self.base.to_string()
    }

    fn rows(&self, period: &Period) -> Result<Vec<Row>, String> {
        let (from_ms, to_ms) = whole_hours(period);
        let mut baselines: HashMap<Labels, f64> = HashMap::new();
        for name in names() {
            let q = format!("last_over_time({name}[{BASELINE_LOOKBACK}])");
            for (labels, samples) in self.query(&q, from_ms / 1000, Some(name))? {
                if let Some((_, v)) = samples.last_key_value() {
                    baselines.insert(labels, *v);
                }
            }
        }
        let selector = counters_selector();
        // Which series the agents exported just before the period: a running agent exports
        // every series of its run at each scrape.
        let recent: HashSet<Labels> = self
            .query(&format!("{selector}[{RECENT}]"), from_ms / 1000, None)?
            .into_iter()
            .filter(|(_, s)| s.range(..=from_ms).next().is_some())
            .map(|(l, _)| l)
            .collect();
        increase::current_run_baselines(&mut baselines, &recent);
        let now_ms = Timestamp::now().as_millisecond();
        let mut series: HashMap<Labels, Samples> = HashMap::new();
        let mut start = from_ms;
        // Hours that have not begun hold no samples yet.
        while start < to_ms && start <= now_ms {
            let end = start + HOUR_MS;
            increase::merge(&mut series, self.query(&format!("{selector}[1h]"), end / 1000, None)?);
            start = end;
        }
        Ok(increase::rows(&series, &baselines, from_ms, to_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_up_front() {
        assert!(PromSource::new("http://127.0.0.1:9090").is_ok());
        assert_eq!(PromSource::new("http://h:1/prefix").unwrap().describe(), "http://h:1/prefix/");
        let e = PromSource::new("prometheus:9090").err().unwrap();
        assert!(e.contains("prometheus:9090"), "{e}");
        assert!(PromSource::new("not a url").err().unwrap().contains("not a URL"));
    }

    #[test]
    fn a_backend_that_is_not_there_is_named() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let src = PromSource::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let period = Period {
            from: "2024-11-01T00:00:00Z".parse().unwrap(),
            to: "2024-11-01T02:00:00Z".parse().unwrap(),
            tz: jiff::tz::TimeZone::UTC,
        };
        let e = src.rows(&period).unwrap_err();
        assert!(e.contains(&format!("http://127.0.0.1:{port}/api/v1/query")), "{e}");
    }

    #[test]
    fn periods_are_read_by_whole_hours() {
        let period = Period {
            from: "2024-11-01T00:30:00Z".parse().unwrap(),
            to: "2024-11-01T02:00:00Z".parse().unwrap(),
            tz: jiff::tz::TimeZone::UTC,
        };
        let (f, t) = whole_hours(&period);
        assert_eq!((t - f) / HOUR_MS, 2);
        assert_eq!(f % HOUR_MS, 0);
        assert!(counters_selector().contains("tokentap_requests_failed_total|"));
        assert!(counters_selector().ends_with("|tokentap_agent_start_time_seconds\"}"));
    }
}
