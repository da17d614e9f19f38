//! From a complete exchange to a usage record: decode bodies, extract usage, attach identity.
use serde::Serialize;
use thiserror::Error;
use tokentap_proto::{
    http::{decode_body, DecodeError, Start},
    llm::{self, LlmError},
};

use crate::{
    attribution::Attribution,
    clock::Clock,
    identity::model::Workload,
    pricing::Cost,
    streams::{conn::host_and_port, Endpoint, TrackedExchange},
};

/// One completed LLM call. Only counts, model names, attribution and timings: never payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRecord {
    pub ts: String,
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub cgroup_id: u64,
    pub provider: &'static str,
    pub operation: &'static str,
    pub server_address: String,
    pub server_port: u16,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_source: &'static str,
    pub streaming: bool,
    pub http_status: u16,
    pub duration_ms: f64,
    pub time_to_first_chunk_ms: Option<f64>,
    pub tls_library: &'static str,
    pub truncated: bool,
    pub error_type: Option<String>,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub container_id: Option<String>,
    pub container_runtime: Option<&'static str>,
    pub k8s_namespace: Option<String>,
    pub k8s_pod: Option<String>,
    pub k8s_workload: Option<String>,
    pub k8s_workload_kind: Option<String>,
    pub k8s_container: Option<String>,
    pub k8s_node: Option<String>,
    pub systemd_unit: Option<String>,
    pub team: String,
    pub cost_center: Option<String>,
    pub product: Option<String>,
    pub tenant: Option<String>,
    pub app: Option<String>,
    /// At the pricing table's list prices; null when the model is not in the table.
    pub cost_usd: Option<f64>,
    /// The exact cost with the unit prices in force, for the ledger (records on the wire keep
    /// the float `cost_usd` only).
    #[serde(skip)]
    pub cost: Option<Cost>,
}

/// Who made a call: the resolved workload, what the mapping made of it, and the node name to
/// report for pods.
pub struct Attributed<'a> {
    pub workload: &'a Workload,
    pub attribution: &'a Attribution,
    pub node: Option<&'a str>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UsageError {
    #[error("request body could not be decoded: {0}")]
    RequestBody(DecodeError),
    #[error("response body could not be decoded: {0}")]
    ResponseBody(DecodeError),
    #[error("usage could not be extracted: {0}")]
    Llm(LlmError),
}

impl UsageError {
    pub fn reason(&self) -> &'static str {
        match self {
            UsageError::RequestBody(e) | UsageError::ResponseBody(e) => e.reason(),
            UsageError::Llm(e) => e.reason(),
        }
    }
}

fn ms(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns.saturating_sub(from_ns) as f64 / 1_000.0).round() / 1_000.0
}

pub fn build(
    tracked: &TrackedExchange,
    who: &Attributed<'_>,
    clock: &Clock,
    body_cap: usize,
) -> Result<UsageRecord, UsageError> {
    let ex = &tracked.exchange;
    let (request_body, request_truncated) = match &ex.request {
        Some(m) if !m.truncated => (
            decode_body(ex.request_head.content_encoding(), &m.body, body_cap).map_err(UsageError::RequestBody)?,
            false,
        ),
        // A cut body cannot be decompressed; a plain one may still yield the model name.
        Some(m) => (if ex.request_head.content_encoding().is_none() { m.body.clone() } else { Vec::new() }, true),
        None => (Vec::new(), true),
    };
    let head = &ex.response.head;
    let status = match head.start {
        Start::Response { status } => status,
        Start::Request { .. } => 0,
    };
    let response_body = if ex.response.truncated {
        if head.content_encoding().is_none() {
            ex.response.body.clone()
        } else {
            Vec::new()
        }
    } else {
        decode_body(head.content_encoding(), &ex.response.body, body_cap).map_err(UsageError::ResponseBody)?
    };
    let call = llm::extract(
        ex.endpoint,
        &llm::Exchange {
            request_body: &request_body,
            request_truncated,
            status,
            response_content_type: head.content_type(),
            response_body: &response_body,
            response_truncated: ex.response.truncated,
        },
    )
    .map_err(UsageError::Llm)?;
    let mut record = base_record(tracked, who, clock);
    record.request_model = call.request_model;
    record.response_model = call.response_model;
    record.input_tokens = call.input_tokens;
    record.output_tokens = call.output_tokens;
    record.cached_input_tokens = call.cached_input_tokens;
    record.reasoning_tokens = call.reasoning_tokens;
    record.usage_source = call.usage_source.as_str();
    record.streaming = call.streaming;
    record.time_to_first_chunk_ms =
        if call.streaming { ex.response_first_body_ns.map(|t| ms(ex.request_start_ns, t)) } else { None };
    record.truncated = request_truncated || ex.response.truncated;
    record.error_type = call.error_type;
    Ok(record)
}

/// The server a call went to. Address: the TLS server name the client asked for (what it meant
/// to reach, even through a gateway whose `Host` differs), else the `Host` header, else the
/// socket peer. Port: from `Host`, else the socket peer, else 443 (TLS is all we see otherwise).
fn server_endpoint(tracked: &TrackedExchange) -> (String, u16) {
    let (host, port) = host_and_port(&tracked.exchange.request_head);
    pick_endpoint(host, port, &tracked.endpoint)
}

fn pick_endpoint(host: String, port: Option<u16>, endpoint: &Endpoint) -> (String, u16) {
    let peer = endpoint.peer;
    let address = match (&endpoint.server_name, host.is_empty(), peer) {
        (Some(name), _, _) => name.to_string(),
        (None, false, _) => host,
        (None, true, Some(peer)) => peer.ip().to_string(),
        (None, true, None) => host,
    };
    (address, port.or(peer.map(|p| p.port())).unwrap_or(443))
}

/// Everything about a call but its usage: identity, attribution, endpoint, status, timing.
/// On its own (`usage_source: "none"`, zero tokens) it stands for a call to an AI endpoint
/// whose usage could not be read, which still counts as a request.
pub fn base_record(tracked: &TrackedExchange, who: &Attributed<'_>, clock: &Clock) -> UsageRecord {
    let ex = &tracked.exchange;
    let status = match ex.response.head.start {
        Start::Response { status } => status,
        Start::Request { .. } => 0,
    };
    let (server_address, server_port) = server_endpoint(tracked);
    let (w, a) = (who.workload, who.attribution);
    let pod = w.pod.as_ref();
    UsageRecord {
        ts: clock.rfc3339(ex.response_end_ns),
        pid: tracked.origin.id.tgid,
        comm: w.comm.clone(),
        exe: w.exe.clone(),
        cgroup_id: tracked.origin.cgroup_id,
        provider: ex.endpoint.provider.as_str(),
        operation: ex.endpoint.operation.as_str(),
        server_address,
        server_port,
        request_model: None,
        response_model: None,
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        reasoning_tokens: 0,
        usage_source: "none",
        streaming: false,
        http_status: status,
        duration_ms: ms(ex.request_start_ns, ex.response_end_ns),
        time_to_first_chunk_ms: None,
        tls_library: tracked.origin.library.as_str(),
        truncated: ex.response.truncated || ex.request.as_ref().is_none_or(|m| m.truncated),
        error_type: None,
        uid: w.uid,
        user: w.user.clone(),
        container_id: w.cgroup.container_id.clone(),
        container_runtime: w.cgroup.runtime.map(|r| r.as_str()),
        k8s_namespace: pod.map(|p| p.namespace.clone()),
        k8s_pod: pod.map(|p| p.name.clone()),
        k8s_workload: pod.and_then(|p| p.workload_name.clone()),
        k8s_workload_kind: pod.and_then(|p| p.workload_kind.clone()),
        k8s_container: w.container.as_ref().map(|c| c.name.clone()),
        k8s_node: pod.and_then(|p| p.node.clone().or_else(|| who.node.map(String::from))),
        systemd_unit: w.cgroup.systemd_unit.clone(),
        team: a.team.clone(),
        cost_center: a.cost_center.clone(),
        product: a.product.clone(),
        tenant: a.tenant.clone(),
        app: a.app.clone(),
        cost_usd: None,
        cost: None,
    }
}

#[cfg(test)]
impl UsageRecord {
    /// A successful, reported, unpriced chat call from `python3` to gpt-4o, for unit tests to
    /// change what they test (`UsageRecord { pid: 9, ..UsageRecord::sample() }`).
    pub fn sample() -> UsageRecord {
        UsageRecord {
            ts: "2026-11-28T10:00:00.5Z".into(),
            pid: 7,
            comm: "python3".into(),
            exe: "/usr/bin/python3".into(),
            cgroup_id: 1,
            provider: "openai",
            operation: "chat",
            server_address: "api.openai.com".into(),
            server_port: 443,
            request_model: Some("gpt-4o".into()),
            response_model: None,
            input_tokens: 100,
            output_tokens: 20,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            usage_source: "reported",
            streaming: false,
            http_status: 200,
            duration_ms: 1.5,
            time_to_first_chunk_ms: None,
            tls_library: "openssl",
            truncated: false,
            error_type: None,
            uid: Some(0),
            user: Some("root".into()),
            container_id: None,
            container_runtime: None,
            k8s_namespace: None,
            k8s_pod: None,
            k8s_workload: None,
            k8s_workload_kind: None,
            k8s_container: None,
            k8s_node: None,
            systemd_unit: None,
            team: "ml".into(),
            cost_center: None,
            product: None,
            tenant: None,
            app: None,
            cost_usd: None,
            cost: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_precedence() {
        let sni = Endpoint { server_name: Some("api.example".into()), peer: None };
        let peer = Endpoint { server_name: None, peer: Some("10.0.0.5:11434".parse().unwrap()) };
        let both = Endpoint { server_name: sni.server_name.clone(), peer: peer.peer };
        let none = Endpoint::default();
        // The TLS server name wins over a differing Host; the Host's port stays.
        assert_eq!(pick_endpoint("gw.internal".into(), Some(8443), &sni), ("api.example".into(), 8443));
        assert_eq!(pick_endpoint("gw.internal".into(), None, &sni), ("api.example".into(), 443));
        assert_eq!(pick_endpoint("gw.internal".into(), None, &both), ("api.example".into(), 11434));
        // Plain HTTP: Host, with the peer's port when Host has none; the peer when no Host.
        assert_eq!(pick_endpoint("ollama.lan".into(), None, &peer), ("ollama.lan".into(), 11434));
        assert_eq!(pick_endpoint("ollama.lan".into(), Some(80), &peer), ("ollama.lan".into(), 80));
        assert_eq!(pick_endpoint(String::new(), None, &peer), ("10.0.0.5".into(), 11434));
        assert_eq!(pick_endpoint("h".into(), None, &none), ("h".into(), 443));
        assert_eq!(pick_endpoint(String::new(), None, &none), (String::new(), 443));
    }
}
