//! Which AI API a request targets, from its method, Host and path.

use super::{Endpoint, Operation, Provider};

/// Known AI provider API hosts and whose they are. Add hosts here.
pub const KNOWN_AI_HOSTS: &[(&str, Provider)] = &[
    ("api.openai.com", Provider::OpenAi),
    ("api.anthropic.com", Provider::Anthropic),
    ("api.cohere.com", Provider::Cohere),
    ("api.cohere.ai", Provider::Cohere),
];

/// Path suffixes (segment-aligned, query stripped) and the operation each one means.
const PATHS: &[(&str, Operation)] = &[
    ("/chat/completions", Operation::Chat),
    ("/v1/responses", Operation::Responses),
    ("/v1/embeddings", Operation::Embeddings),
    ("/v1/messages", Operation::Messages),
    ("/v2/chat", Operation::CohereChat),
    ("/v2/embed", Operation::CohereEmbed),
];

/// Which AI API a request targets, from what the request line and headers say. `host` is the
/// Host header without port, lower-cased (a port or upper case is tolerated); `path` is the
/// request target (a query string is ignored; an absolute-form target is reduced to its path).
///
/// Recognised (POST only): any path ending in `/chat/completions` (so `/v1/chat/completions`,
/// `/openai/v1/chat/completions`, `/openai/deployments/x/chat/completions`), `/v1/responses`,
/// `/v1/embeddings`, `/v1/messages`. A known host decides the provider; otherwise
/// `/v1/messages` is Anthropic and the others OpenAI (OpenAI-compatible servers are the norm).
pub fn recognise(method: &str, host: &str, path: &str) -> Option<Endpoint> {
    if !method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = strip_origin(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let operation = PATHS.iter().find(|(suffix, _)| path.ends_with(suffix)).map(|(_, op)| *op)?;
    let provider = known_provider(host).unwrap_or(match operation {
        Operation::Messages => Provider::Anthropic,
        Operation::CohereChat | Operation::CohereEmbed => Provider::Cohere,
        _ => Provider::OpenAi,
    });
    Some(Endpoint { provider, operation })
}

/// True if `host` is a known AI provider API host (see [`KNOWN_AI_HOSTS`]).
pub fn is_known_ai_host(host: &str) -> bool {
    known_provider(host).is_some()
}

fn known_provider(host: &str) -> Option<Provider> {
    let host = normalise_host(host);
    KNOWN_AI_HOSTS.iter().find(|(known, _)| host.eq_ignore_ascii_case(known)).map(|(_, p)| *p)
}

/// Drops surrounding blanks, a `:port` and a trailing root dot.
fn normalise_host(host: &str) -> &str {
    let host = host.trim();
    let host = match host.rsplit_once(':') {
        // Not an IPv6 literal (those are bracketed, or have several colons).
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// `https://api.openai.com/v1/x` → `/v1/x` (absolute-form request targets, as sent to proxies).
fn strip_origin(target: &str) -> &str {
    match target.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => rest.find('/').map_or("", |i| &rest[i..]),
        _ => target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(provider: Provider, operation: Operation) -> Option<Endpoint> {
        Some(Endpoint { provider, operation })
    }

    #[test]
    fn openai_paths() {
        use Operation::*;
        use Provider::*;
        let h = "api.openai.com";
        assert_eq!(recognise("POST", h, "/v1/chat/completions"), ep(OpenAi, Chat));
        assert_eq!(recognise("POST", h, "/v1/responses"), ep(OpenAi, Responses));
        assert_eq!(recognise("POST", h, "/v1/embeddings"), ep(OpenAi, Embeddings));
        assert_eq!(recognise("POST", h, "/v1/chat/completions?x=1"), ep(OpenAi, Chat));
        assert_eq!(recognise("POST", h, "/v1/chat/completions/"), ep(OpenAi, Chat));
        assert_eq!(recognise("GET", h, "/v1/chat/completions"), None);
        assert_eq!(recognise("GET", h, "/v1/models"), None);
        assert_eq!(recognise("POST", h, "/v1/completions"), None);
        assert_eq!(recognise("POST", h, "/v1/responses/resp_1/cancel"), None);
        assert_eq!(recognise("POST", h, "/v1/audio/transcriptions"), None);
    }

    #[test]
    fn compatible_servers_and_prefixes() {
        use Operation::*;
        use Provider::*;
        assert_eq!(recognise("POST", "localhost", "/chat/completions"), ep(OpenAi, Chat));
        assert_eq!(recognise("POST", "gateway.internal", "/openai/v1/chat/completions"), ep(OpenAi, Chat));
        assert_eq!(
            recognise(
                "POST",
                "acme.openai.azure.com",
                "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
            ),
            ep(OpenAi, Chat)
        );
        assert_eq!(recognise("POST", "127.0.0.1", "/v1/messages"), ep(Anthropic, Messages));
        assert_eq!(recognise("POST", "proxy", "/anthropic/v1/messages"), ep(Anthropic, Messages));
        assert_eq!(recognise("POST", "x", "/v1/xchat/completions"), None);
        assert_eq!(recognise("POST", "x", "/v1/messages/count_tokens"), None);
        assert_eq!(recognise("POST", "x", "/v1/messages/batches"), None);
        assert_eq!(recognise("POST", "x", ""), None);
    }

    #[test]
    fn known_host_decides_provider() {
        use Operation::*;
        use Provider::*;
        // Anthropic's OpenAI-SDK compatibility endpoint.
        assert_eq!(recognise("POST", "api.anthropic.com", "/v1/chat/completions"), ep(Anthropic, Chat));
        assert_eq!(recognise("POST", "api.anthropic.com", "/v1/messages"), ep(Anthropic, Messages));
        assert_eq!(
            recognise("POST", "API.OpenAI.com:443", "https://api.openai.com/v1/responses"),
            ep(OpenAi, Responses)
        );
    }

    #[test]
    fn cohere_v2() {
        use Operation::*;
        use Provider::*;
        assert_eq!(recognise("POST", "api.cohere.com", "/v2/chat"), ep(Cohere, CohereChat));
        assert_eq!(recognise("POST", "api.cohere.ai", "/v2/embed"), ep(Cohere, CohereEmbed));
        assert_eq!(recognise("POST", "127.0.0.1:8080", "/v2/chat"), ep(Cohere, CohereChat));
        // Cohere's OpenAI-compatible endpoint is still Cohere's bill.
        assert_eq!(recognise("POST", "api.cohere.ai", "/compatibility/v1/chat/completions"), ep(Cohere, Chat));
        assert_eq!(recognise("POST", "api.cohere.com", "/v2/rerank"), None);
        assert_eq!(recognise("POST", "api.cohere.com", "/v1/chat"), None);
        assert!(is_known_ai_host("api.cohere.com"));
    }

    #[test]
    fn known_hosts() {
        assert!(is_known_ai_host("api.openai.com"));
        assert!(is_known_ai_host("api.anthropic.com"));
        assert!(is_known_ai_host("api.anthropic.com:443"));
        assert!(is_known_ai_host("api.openai.com."));
        assert!(!is_known_ai_host("openai.com"));
        assert!(!is_known_ai_host("api.openai.com.evil.example"));
        assert!(!is_known_ai_host("example.com"));
        assert!(!is_known_ai_host(""));
        assert!(!is_known_ai_host("[::1]:443"));
    }
}
