//! The OTLP metric exporter: gRPC or HTTP/protobuf chosen at run time, standard environment
//! variables honoured, the config file overriding them, and every export's outcome counted.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{data::ResourceMetrics, exporter::PushMetricExporter, Temporality},
};

use super::ExportConfig;

/// Export outcomes, read by the health metrics and the log.
#[derive(Debug, Default)]
pub struct ExportCounts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// Counts each export's outcome: the SDK only logs failures. Cumulative temporality means a
/// failed export loses nothing — the next successful one carries the totals.
pub struct CountingExporter<E> {
    pub inner: E,
    pub counts: Arc<ExportCounts>,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        match &result {
            Ok(()) => self.counts.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counts.failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("export.otlp_protocol {0:?}: expected \"grpc\" or \"http/protobuf\"")]
    Protocol(String),
    #[error("building the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// OTLP is on when an endpoint is configured, in the file or by the standard variables.
pub fn enabled(config: &ExportConfig) -> bool {
    config.otlp_endpoint.is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some()
}

fn protocol(config: &ExportConfig) -> Result<Protocol, OtlpError> {
    let chosen = config
        .otlp_protocol
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    match chosen.trim() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpBinary),
        other => Err(OtlpError::Protocol(other.into())),
    }
}

/// The OTLP/HTTP metrics URL for a base endpoint, as the spec derives it from
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn http_metrics_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/metrics") {
        base.to_string()
    } else {
        format!("{base}/v1/metrics")
    }
}

/// Builds the exporter. Must run inside a tokio runtime context: tonic's channel spawns its
/// worker on it.
pub fn build(config: &ExportConfig) -> Result<MetricExporter, OtlpError> {
    let protocol = protocol(config)?;
    // Without file overrides, the exporter reads endpoint, headers, timeout and compression
    // from the standard variables itself.
    if config.otlp_endpoint.is_none() && config.otlp_headers.is_empty() && config.otlp_protocol.is_none() {
        return Ok(MetricExporter::builder().with_temporality(Temporality::Cumulative).build()?);
    }
    let headers: HashMap<String, String> = config.otlp_headers.clone().into_iter().collect();
    let exporter = match protocol {
        Protocol::Grpc => {
            let mut b = MetricExporter::builder().with_tonic().with_temporality(Temporality::Cumulative);
            if let Some(endpoint) = &config.otlp_endpoint {
                b = b.with_endpoint(endpoint.clone());
            }
            if !headers.is_empty() {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                        tonic::metadata::MetadataValue::try_from(v.as_str()),
                    ) {
                        metadata.insert(k, v);
                    }
                }
                b = b.with_metadata(metadata);
            }
            b.build()?
        }
        _ => {
            let mut b = MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_temporality(Temporality::Cumulative);
            if let Some(endpoint) = &config.otlp_endpoint {
                b = b.with_endpoint(http_metrics_url(endpoint));
            }
            if !headers.is_empty() {
                b = b.with_headers(headers);
            }
            b.build()?
        }
    };
    Ok(exporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_gets_the_signal_path_once() {
        assert_eq!(http_metrics_url("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(http_metrics_url("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(http_metrics_url("http://c:4318/v1/metrics"), "http://c:4318/v1/metrics");
    }

    #[test]
    fn protocol_from_config_and_bad_values() {
        let mut c = ExportConfig { otlp_protocol: Some("grpc".into()), ..Default::default() };
        assert!(matches!(protocol(&c), Ok(Protocol::Grpc)));
        c.otlp_protocol = Some("http/json".into());
        assert!(matches!(protocol(&c), Err(OtlpError::Protocol(p)) if p == "http/json"));
    }
}
