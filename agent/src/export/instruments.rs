//! The usage instruments: the GenAI semantic-convention histograms, exact counters for
//! chargeback, and (opt-in) the newer `gen_ai.client.inference.usage.*` counters.
use opentelemetry::{
    metrics::{Counter, Histogram, Meter},
    KeyValue,
};

use super::labels::RecordLabels;
use crate::usage::UsageRecord;

/// Semantic conventions v1.41 `gen_ai.client.token.usage` buckets.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
/// `gen_ai.client.operation.duration` buckets: 0.01 s doubling to 81.92 s.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

struct Latest {
    input: Counter<u64>,
    output: Counter<u64>,
    cache_read: Counter<u64>,
    reasoning: Counter<u64>,
}

pub struct Instruments {
    token_usage: Histogram<u64>,
    duration: Histogram<f64>,
    time_to_first_chunk: Histogram<f64>,
    input: Counter<u64>,
    output: Counter<u64>,
    cached_input: Counter<u64>,
    reasoning: Counter<u64>,
    requests: Counter<u64>,
    failed: Counter<u64>,
    cost: Counter<f64>,
    unpriced: Counter<u64>,
    latest: Option<Latest>,
}

fn tokens(meter: &Meter, name: &'static str, description: &'static str) -> Counter<u64> {
    meter.u64_counter(name).with_unit("{token}").with_description(description).build()
}

/// `OTEL_SEMCONV_STABILITY_OPT_IN` holds `gen_ai_latest_experimental`.
pub fn latest_experimental_opted_in(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.split(',').any(|s| s.trim() == "gen_ai_latest_experimental"))
}

impl Instruments {
    pub fn new(meter: &Meter, latest_experimental: bool) -> Instruments {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        let latest = latest_experimental.then(|| Latest {
            input: tokens(meter, "gen_ai.client.inference.usage.input_tokens", "Input tokens used, cached included"),
            output: tokens(
                meter,
                "gen_ai.client.inference.usage.output_tokens",
                "Output tokens used, reasoning included",
            ),
            cache_read: tokens(
                meter,
                "gen_ai.client.inference.usage.cache_read.input_tokens",
                "Input tokens read from cache",
            ),
            reasoning: tokens(
                meter,
                "gen_ai.client.inference.usage.reasoning.output_tokens",
                "Reasoning output tokens",
            ),
        });
        Instruments {
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            duration: seconds("gen_ai.client.operation.duration", "GenAI operation duration"),
            time_to_first_chunk: seconds(
                "gen_ai.client.operation.time_to_first_chunk",
                "Time to receive the first chunk of a streaming response",
            ),
            input: tokens(meter, "tokentap.tokens.input", "Input tokens, cached ones included"),
            output: tokens(meter, "tokentap.tokens.output", "Output tokens, reasoning ones included"),
            cached_input: tokens(meter, "tokentap.tokens.cached_input", "Input tokens served from the prompt cache"),
            reasoning: tokens(meter, "tokentap.tokens.reasoning", "Reasoning output tokens"),
            requests: meter
                .u64_counter("tokentap.requests")
                .with_unit("{request}")
                .with_description("Calls to AI API endpoints, whether or not their usage could be read")
                .build(),
            failed: meter
                .u64_counter("tokentap.requests.failed")
                .with_unit("{request}")
                .with_description("Calls that failed: HTTP status >= 400 or a provider error")
                .build(),
            cost: meter
                .f64_counter("tokentap.cost")
                .with_unit("USD")
                .with_description("Cost of the calls at the pricing table's list prices")
                .build(),
            unpriced: meter
                .u64_counter("tokentap.calls.unpriced")
                .with_unit("{call}")
                .with_description("Calls whose model is not in the pricing table (costed at 0)")
                .build(),
            latest,
        }
    }

    pub fn record(&self, r: &UsageRecord, labels: &RecordLabels) {
        let common = labels.common.as_slice();
        self.requests.add(1, common);
        let failed = failed(r);
        if failed {
            self.failed.add(1, common);
        }
        self.input.add(r.input_tokens, common);
        self.output.add(r.output_tokens, common);
        self.cached_input.add(r.cached_input_tokens, common);
        self.reasoning.add(r.reasoning_tokens, common);
        match r.cost_usd {
            Some(usd) => self.cost.add(usd, common),
            None if r.input_tokens + r.output_tokens > 0 => self.unpriced.add(1, common),
            None => {}
        }
        if let Some(l) = &self.latest {
            let mut with_modality = labels.common.clone();
            // Providers do not break usage down by modality on these APIs.
            with_modality.push(KeyValue::new("gen_ai.token.modality", "unknown"));
            l.input.add(r.input_tokens, &with_modality);
            l.output.add(r.output_tokens, &with_modality);
            l.cache_read.add(r.cached_input_tokens, &with_modality);
            l.reasoning.add(r.reasoning_tokens, &with_modality);
        }
        let semconv = common;
        if !failed || r.input_tokens + r.output_tokens > 0 {
            for (kind, n) in [("input", r.input_tokens), ("output", r.output_tokens)] {
                let mut kv = semconv.to_vec();
                kv.push(KeyValue::new("gen_ai.token.type", kind));
                self.token_usage.record(n, &kv);
            }
        }
        let mut kv = semconv.to_vec();
        if failed {
            let error = r.error_type.clone().unwrap_or_else(|| r.http_status.to_string());
            kv.push(KeyValue::new("error.type", error));
        }
        self.duration.record(r.duration_ms / 1000.0, &kv);
        if let Some(ttfc) = r.time_to_first_chunk_ms.filter(|_| r.streaming) {
            self.time_to_first_chunk.record(ttfc / 1000.0, semconv);
        }
    }

    /// A call to an AI endpoint whose usage could not be read still counts as a request (and
    /// as a failure when its status says so).
    pub fn record_unparsed(&self, r: &UsageRecord, labels: &[KeyValue]) {
        self.requests.add(1, labels);
        if failed(r) {
            self.failed.add(1, labels);
        }
    }
}

/// A failed call: HTTP status >= 400 or a provider error. The same rule as the ledger's
/// `IS_ERROR_SQL`, so reports from Prometheus count the errors reports from ledgers do.
pub fn failed(r: &UsageRecord) -> bool {
    r.error_type.is_some() || r.http_status >= 400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_in_is_one_of_a_comma_list() {
        assert!(latest_experimental_opted_in(Some("http,gen_ai_latest_experimental")));
        assert!(latest_experimental_opted_in(Some(" gen_ai_latest_experimental ")));
        assert!(!latest_experimental_opted_in(Some("gen_ai")));
        assert!(!latest_experimental_opted_in(None));
    }
}
