//! Metrics out of the agent: OTLP (gRPC or HTTP/protobuf) by the OpenTelemetry GenAI semantic
//! conventions plus exact `tokentap.*` counters for chargeback, and an optional Prometheus
//! scrape endpoint with the same metrics.
//!
//! Temporality is cumulative: a collector that is down for a while receives the full totals
//! once it is back, nothing lost and nothing counted twice, and memory stays bounded by the
//! attribute cardinality cap rather than by the outage's length. Exports run on the SDK's own
//! thread and never block capture.
pub mod health;
pub mod instruments;
pub mod labels;
pub mod otlp;
pub mod prometheus;
pub mod quota;
pub mod start;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use opentelemetry::{metrics::MeterProvider as _, KeyValue};
use opentelemetry_sdk::{
    metrics::{PeriodicReader, SdkMeterProvider},
    Resource,
};
use serde::Deserialize;

use self::{
    health::{HealthSnapshot, SharedHealth},
    instruments::Instruments,
    labels::Labels,
    otlp::{CountingExporter, ExportCounts},
    quota::QuotaInstruments,
};
use crate::{enforce::status::QuotaStatus, usage::UsageRecord};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// OTLP endpoint (base URL, e.g. `http://collector:4317` for gRPC, `http://collector:4318`
    /// for HTTP). Overrides `OTEL_EXPORTER_OTLP_ENDPOINT`. OTLP is off unless one is set.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`. Overrides `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otlp_protocol: Option<String>,
    /// Extra headers (e.g. an API key for a hosted backend). Overrides `OTEL_EXPORTER_OTLP_HEADERS`.
    pub otlp_headers: BTreeMap<String, String>,
    /// Seconds between exports. Overrides `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds).
    pub export_interval_secs: Option<u64>,
    /// Serve the same metrics for Prometheus at `http://ADDR/metrics`.
    pub prometheus_listen: Option<SocketAddr>,
    /// Add `process.pid` to the usage metrics (high cardinality).
    pub include_pid: bool,
    /// Add `k8s.pod.name` to the usage metrics (high cardinality).
    pub include_pod: bool,
    /// Distinct values per attribute before new ones are folded into `other`.
    pub max_values_per_attribute: usize,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers: BTreeMap::new(),
            export_interval_secs: None,
            prometheus_listen: None,
            include_pid: false,
            include_pod: false,
            max_values_per_attribute: 1000,
        }
    }
}

/// What the resource says about where the agent runs.
#[derive(Debug, Default, Clone)]
pub struct ResourceInfo {
    pub host_name: Option<String>,
    pub node_name: Option<String>,
    pub cluster_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    #[error("starting the OTLP exporter's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("export.prometheus_listen {addr}: {source}")]
    Prometheus { addr: SocketAddr, source: std::io::Error },
    #[error("prometheus exporter: {0}")]
    PrometheusSetup(String),
}

pub struct Exporter {
    provider: SdkMeterProvider,
    instruments: Instruments,
    quota: QuotaInstruments,
    labels: Labels,
    health: SharedHealth,
    pub exports: Arc<ExportCounts>,
    /// tonic needs a reactor of its own: exports must not wait for the agent's loop to idle.
    otlp_runtime: Option<tokio::runtime::Runtime>,
    pub prometheus_addr: Option<SocketAddr>,
}

fn resource(info: &ResourceInfo) -> Resource {
    let mut builder = Resource::builder();
    let env_names_service = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| v.split(',').any(|kv| kv.trim_start().starts_with("service.name=")))
            .unwrap_or(false);
    if !env_names_service {
        builder = builder.with_service_name("tokentap");
    }
    let mut kv = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    for (key, value) in
        [("host.name", &info.host_name), ("k8s.node.name", &info.node_name), ("k8s.cluster.name", &info.cluster_name)]
    {
        if let Some(v) = value {
            kv.push(KeyValue::new(key, v.clone()));
        }
    }
    builder.with_attributes(kv).build()
}

impl Exporter {
    /// Starts the configured exports; `None` when neither OTLP nor Prometheus is configured.
    pub async fn start(config: &ExportConfig, info: &ResourceInfo) -> Result<Option<Exporter>, ExportError> {
        let otlp_on = otlp::enabled(config);
        if !otlp_on && config.prometheus_listen.is_none() {
            return Ok(None);
        }
        // reqwest (OTLP/HTTP) and tonic take rustls' process-wide provider; kube may have
        // installed it already, in which case this is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exports = Arc::new(ExportCounts::default());
        let mut builder = SdkMeterProvider::builder().with_resource(resource(info));
        let mut otlp_runtime = None;
        if otlp_on {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("tokentap-otlp")
                .enable_all()
                .build()
                .map_err(ExportError::Runtime)?;
            let exporter = {
                let _guard = rt.enter();
                otlp::build(config)?
            };
            let mut reader = PeriodicReader::builder(CountingExporter { inner: exporter, counts: exports.clone() });
            if let Some(secs) = config.export_interval_secs {
                reader = reader.with_interval(Duration::from_secs(secs.max(1)));
            }
            builder = builder.with_reader(reader.build());
            otlp_runtime = Some(rt);
        }
        let mut prometheus_addr = None;
        if let Some(addr) = config.prometheus_listen {
            let registry = ::prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|e| ExportError::PrometheusSetup(e.to_string()))?;
            builder = builder.with_reader(reader);
            prometheus_addr = Some(
                prometheus::serve(addr, registry).await.map_err(|source| ExportError::Prometheus { addr, source })?,
            );
        }
        let provider = builder.build();
        let meter = provider.meter("tokentap");
        let latest =
            instruments::latest_experimental_opted_in(std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN").ok().as_deref());
        let instruments = Instruments::new(&meter, latest);
        let health = SharedHealth::default();
        health::register(&meter, &health, &exports);
        start::register(&meter);
        let quota = QuotaInstruments::register(&meter);
        Ok(Some(Exporter {
            provider,
            instruments,
            quota,
            labels: Labels::new(config.max_values_per_attribute.max(1), config.include_pid, config.include_pod),
            health,
            exports,
            otlp_runtime,
            prometheus_addr,
        }))
    }

    pub fn record(&mut self, r: &UsageRecord) {
        let labels = self.labels.for_record(r);
        self.instruments.record(r, &labels);
    }

    /// A call to an AI endpoint whose usage could not be read (`r` carries zero tokens).
    pub fn record_unparsed(&mut self, r: &UsageRecord) {
        let labels = self.labels.for_record(r);
        self.instruments.record_unparsed(r, &labels.common);
    }

    /// Refreshes what the health instruments report.
    pub fn update_health(&mut self, mut snapshot: HealthSnapshot) {
        snapshot.folded = self.labels.folded.clone();
        if let Ok(mut h) = self.health.lock() {
            *h = snapshot;
        }
    }

    /// The quota gauges report this status's entitlements from now on.
    pub fn update_quota(&mut self, status: &QuotaStatus) {
        self.quota.update(status);
    }

    /// An entitlement crossed its `warn_at`.
    pub fn quota_warning(&mut self, entitlement: &str) {
        self.quota.warning(entitlement);
    }

    /// An action (`observe`, `signal`, `deny`, `cut`) fired for an entitlement.
    pub fn quota_action(&mut self, entitlement: &str, action: &str) {
        self.quota.action(entitlement, action);
    }

    /// The cluster counters' Redis client: operations and failures since start (totals), and
    /// whether Redis answered last time. Until first called, the Redis instruments report nothing.
    pub fn update_redis(&mut self, operations: u64, failures: u64, up: bool) {
        self.quota.redis(operations, failures, up);
    }

    /// Flushes and stops. Blocks (up to the SDK's timeout plus one export): call it off the
    /// agent's runtime thread.
    pub fn shutdown(mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "metrics shutdown");
        }
        if let Some(rt) = self.otlp_runtime.take() {
            rt.shutdown_background();
        }
    }
}
